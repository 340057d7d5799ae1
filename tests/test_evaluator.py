"""The evaluator against a hand-written, unbatched computation with raw `transformers` calls."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Literal

import pytest
import torch

from autoprompt import Budget, BudgetExhausted, Evaluator, Example, Prompt, Task
from autoprompt.backends import Encoded, Scores, ScoringModel, WordTable
from autoprompt.prompts import Demonstration, Template
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.scoring.metrics import macro_f1, ranking
from autoprompt.testing import tiny_causal_lm, tiny_masked_lm

MULTI = {"negative": ["bad", "awful thing", "terrible"], "positive": ["good", "superb film"]}


def reference_causal(lm, prompt, examples, labels, length_norm=False):
    """One example, one word at a time: sum of log-probs of the word's tokens after the prefix."""
    table = lm.word_table(prompt, labels)
    rows = []
    for ex in examples:
        prefix = list(lm.encode(prompt, ex).ids)
        classes = []
        for words in table:
            scores = []
            for w in words:
                ids = torch.tensor([prefix + list(w)])
                with torch.no_grad():
                    logp = lm.model(input_ids=ids).logits[0].log_softmax(-1)
                s = sum(float(logp[len(prefix) - 1 + k, tok]) for k, tok in enumerate(w))
                scores.append(s / len(w) if length_norm else s)
            classes.append(torch.logsumexp(torch.tensor(scores), 0))
        rows.append(torch.stack(classes))
    return torch.stack(rows)


def reference_masked(lm, prompt, examples, labels):
    """One example, one word at a time: n masks for an n-token word, sum of log-probs at the masks."""
    table = lm.word_table(prompt, labels)
    mask = lm.tokenizer.mask_token_id
    rows = []
    for ex in examples:
        enc = lm.encode(prompt, ex)
        classes = []
        for words in table:
            scores = []
            for w in words:
                ids = list(enc.ids[: enc.predict_at]) + [mask] * len(w) + list(enc.ids[enc.predict_at + 1 :])
                with torch.no_grad():
                    logp = lm.model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
                scores.append(sum(float(logp[enc.predict_at + k, tok]) for k, tok in enumerate(w)))
            classes.append(torch.logsumexp(torch.tensor(scores), 0))
        rows.append(torch.stack(classes))
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_causal_matches_reference(arch, padding_side, task):
    lm = tiny_causal_lm(arch, padding_side=padding_side)
    prompt = Prompt("{sentence} It was [P]", MULTI)
    examples = task.task and task.test
    expected = reference_causal(lm, prompt, examples, task.task.labels)
    for batch_size in (1, 3, 32):
        got = Evaluator(lm, task.task, batch_size=batch_size).score(prompt, examples).logprobs
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_causal_length_norm_matches_reference(task):
    lm = tiny_causal_lm("llama", length_norm=True)
    prompt = Prompt("{sentence} It was [P]", MULTI)
    expected = reference_causal(lm, prompt, task.test, task.task.labels, length_norm=True)
    got = Evaluator(lm, task.task).score(prompt, task.test).logprobs
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_masked_matches_reference(masked, task):
    # [P] in the middle: the masked LM scores anywhere; multi-token words use several masks
    words = {"negative": ["bad", "plots"], "positive": ["good", "endings", "goodbad"]}
    prompt = Prompt("{sentence} . it was [P] , the end .", words)
    expected = reference_masked(masked, prompt, task.test, task.task.labels)
    assert any(len(w) > 1 for ws in masked.word_table(prompt, task.task.labels) for w in ws)
    for batch_size in (1, 4, 32):
        got = Evaluator(masked, task.task, batch_size=batch_size).score(prompt, task.test).logprobs
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_independent_of_bucket_order(causal, task):
    prompt = Prompt("{sentence} It was [P]", MULTI)
    examples = task.train
    base = Evaluator(causal, task.task, batch_size=5).score(prompt, examples).logprobs
    order = list(range(len(examples)))
    random.Random(1).shuffle(order)
    shuffled = Evaluator(causal, task.task, batch_size=5).score(prompt, [examples[i] for i in order]).logprobs
    torch.testing.assert_close(shuffled, base[order], atol=1e-5, rtol=0)


def test_score_many_equals_score_one_by_one(causal, task):
    prompts = [Prompt("{sentence} It was [P]", MULTI), Prompt("{sentence} Overall [P]", MULTI),
               Prompt("Text: {sentence} Sentiment: [P]", {"negative": ["bad"], "positive": ["good"]})]
    together = Evaluator(causal, task.task, batch_size=7).score_many(prompts, task.dev)
    for prompt, result in zip(prompts, together):
        alone = Evaluator(causal, task.task).score(prompt, task.dev)
        torch.testing.assert_close(result.logprobs, alone.logprobs, atol=1e-5, rtol=0)


def _checksum(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("which", ["causal", "masked"])
def test_model_unchanged_by_scoring(which, request, task):
    lm = request.getfixturevalue(which)
    before = _checksum(lm.model)
    assert not any(p.requires_grad for p in lm.model.parameters())
    assert not lm.model.training
    Evaluator(lm, task.task).score_many([task.task.default_prompt, Prompt("{sentence} [P]", MULTI)], task.train)
    assert _checksum(lm.model) == before


def _lama_like_task(lm, n_classes=40, n=12):
    rng = random.Random(0)
    words = ["good", "bad", "superb film", "awful thing", "the plot", "music", "nice cast", "story ending"]
    labels = [f"{rng.choice(words)} {i}" if i >= len(words) else words[i] for i in range(n_classes)]
    examples = [Example({"subject": rng.choice(["the movie", "the film", "a story"])}, rng.randrange(n_classes))
                for _ in range(n)]
    task = Task("lama:test", ("subject",), tuple(labels), "{subject} was [P]", {lab: [lab] for lab in labels}, "lama")
    return task, examples


def test_lama_pruning_keeps_rank_metrics_exact(causal):
    task, examples = _lama_like_task(causal)
    pruned = Evaluator(causal, task).score(task.default_prompt, examples)
    exact = reference_causal(causal, task.default_prompt, examples, task.labels)
    labels = torch.tensor([e.label for e in examples])
    assert torch.equal(pruned.preds, exact.argmax(-1))
    assert pruned.extra["p@1"] == ranking(exact, labels)["p@1"]
    assert pruned.extra["p@10"] == ranking(exact, labels)["p@10"]
    assert pruned.extra["mrr"] == pytest.approx(ranking(exact, labels)["mrr"], abs=1e-6)
    # a pruned entry holds an upper bound of its exact score
    assert bool((pruned.logprobs >= exact - 1e-5).all())


def test_budget_and_cache(causal, task):
    budget = Budget(max_forwards=len(task.dev) * 2)
    ev = Evaluator(causal, task.task, budget=budget)
    p1, p2, p3 = (Prompt(t, MULTI) for t in ("{sentence} A [P]", "{sentence} B [P]", "{sentence} C [P]"))
    ev.score(p1, task.dev)
    ev.score(p1, task.dev)  # cached: free
    assert budget.forwards == len(task.dev)
    ev.score(p2, task.dev)
    assert budget.exhausted
    with pytest.raises(BudgetExhausted):
        ev.score(p3, task.dev)
    assert budget.used == 2 * len(task.dev)


def test_metrics_by_hand():
    preds = torch.tensor([0, 1, 2, 2, 1])
    labels = torch.tensor([0, 1, 1, 2, 2])
    # class 0: f1 1; class 1: tp1 fp1 fn1 -> .5; class 2: tp1 fp1 fn1 -> .5
    assert macro_f1(preds, labels, 3) == pytest.approx((1 + 0.5 + 0.5) / 3)
    logprobs = torch.tensor([[0.0, -1.0, -2.0], [-3.0, -1.0, 0.0]])
    r = ranking(logprobs, torch.tensor([1, 0]))
    assert r["p@1"] == 0 and r["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prefix_scoring_equals_separate(arch, task):
    lm = tiny_causal_lm(arch)
    ids = [lm.tokenize(" movie")[0], lm.tokenize(" the")[0], lm.tokenize(" plot")[0]]
    prompts = [Prompt("{sentence} [T] [T] It was [P]", MULTI, (a, b)) for a in ids for b in ids]
    prompts.append(Prompt("{sentence} It is [P]", MULTI))  # a different suffix length
    # and with a prompt that shares nothing with the others (the plain path takes over)
    for group in (prompts, [*prompts, Prompt("Review: {sentence} It is [P]", MULTI)]):
        shared = Evaluator(lm, task.task, batch_size=4).score_many(group, task.train)
        separate = Evaluator(lm, task.task, batch_size=4, shared_prefix=False).score_many(group, task.train)
        for a, b in zip(shared, separate, strict=True):
            torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


def test_trigger_gradient_matches_finite_difference(task):
    # float64 weights, so that central differences are exact enough to compare with
    causal, masked = tiny_causal_lm("llama"), tiny_masked_lm()
    causal.model.double()
    masked.model.double()
    for lm, template in ((causal, "{sentence} [T] [T] It was [P]"), (masked, "{sentence} [T] [T] it was [P] .")):
        prompt = Prompt(template, {"negative": ["bad"], "positive": ["good"]},
                        (lm.tokenize(" the")[-1], lm.tokenize(" plot")[-1]))
        batch = [lm.encode(prompt, ex) for ex in task.train[:6]]
        words = lm.word_table(prompt, task.task.labels)
        gold = [ex.label for ex in task.train[:6]]
        grad, _ = lm.trigger_gradient(batch, words, gold)
        assert grad.shape == (2, lm.embedding_matrix().shape[1])
        # directional derivative along a random direction at trigger 1, by central differences
        direction = torch.randn(grad.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        base = lm.embedding_matrix()[prompt.trigger_ids[1]].detach()
        eps = 1e-3

        def loss_at(vec, lm=lm, prompt=prompt, batch=batch, words=words, gold=gold):
            vectors = torch.stack([lm.embedding_matrix()[prompt.trigger_ids[0]].detach(), vec])
            with torch.no_grad():
                scores = lm._scores(batch, words, None, vectors).logprobs
            return float(-scores[torch.arange(6), torch.tensor(gold)].mean())

        numeric = (loss_at(base + eps * direction) - loss_at(base - eps * direction)) / (2 * eps)
        assert float(grad[1] @ direction) == pytest.approx(numeric, rel=5e-3, abs=1e-6)  # rotary tables stay float32
        assert float(grad[1].abs().sum()) > 0
        assert not any(p.requires_grad for p in lm.model.parameters())


def test_ensemble_is_the_weighted_mean_of_members(causal, task, tmp_path):
    from autoprompt.prompts import Ensemble, load_prompt  # noqa: PLC0415

    a = Prompt("{sentence} It was [P]", MULTI)
    b = Prompt("Text: {sentence} Sentiment: [P]", {"negative": ["bad"], "positive": ["good"]})
    ens = Ensemble((a, b), (3.0, 1.0))
    assert ens.weights == (0.75, 0.25)
    ev = Evaluator(causal, task.task)
    ra, rb = ev.score(a, task.dev).logprobs, ev.score(b, task.dev).logprobs
    got = Evaluator(causal, task.task).score(ens, task.dev)
    by_hand = torch.stack([torch.stack([0.75 * ra[i, c] + 0.25 * rb[i, c] for c in range(2)])
                           for i in range(len(task.dev))])
    torch.testing.assert_close(got.logprobs, by_hand, atol=1e-6, rtol=0)
    assert got.score == float((by_hand.argmax(-1) == torch.tensor([e.label for e in task.dev])).float().mean())
    path = tmp_path / "ensemble.json"
    path.write_text(__import__("json").dumps(ens.to_json()))
    again = load_prompt(path)
    assert isinstance(again, Ensemble) and again.fingerprint == ens.fingerprint
    with pytest.raises(Exception, match="one weight per member"):
        Ensemble((a, b), (1.0,))


class WordCounter:
    """A fake backend, short because the protocol (`ScoringModel`) is: a 'model' that scores each class by
    how often the class's label word appears in the input (ids are words, from a growing vocabulary)."""

    kind: Literal["causal"] = "causal"
    name, shares_prefix, max_length, context_length, licence = "word-counter", False, 512, 512, None
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def tokenize(self, text: str) -> tuple[int, ...]:
        return tuple(self.vocab.setdefault(w, len(self.vocab)) for w in text.split())

    def decode(self, ids: Sequence[int]) -> str:
        words = {i: w for w, i in self.vocab.items()}
        return " ".join(words[i] for i in ids)

    def word_table(self, prompt: Prompt, labels: Sequence[str]) -> WordTable:
        return [[self.tokenize(w) for w in ws] for ws in prompt.verbalizer.for_labels(labels)]

    def encode(self, prompt: Prompt, example: Example, demos: Sequence[Demonstration] | None = None) -> Encoded:
        ids = self.tokenize(prompt.template.render(example.fields).replace("[P]", ""))
        return Encoded(ids, len(ids))

    def label_logprobs(self, batch: Sequence[Encoded], words: WordTable, gold: Sequence[int] | None = None,
                       soft: SoftPrompt | None = None) -> Scores:
        counts = torch.tensor([[float(sum(e.ids.count(w[0]) for w in ws)) for ws in words] for e in batch])
        return Scores(counts.log_softmax(-1), torch.zeros(len(batch), dtype=torch.long))

    def check_template(self, template: Template) -> None: ...
    def check_triggers(self, prompt: Prompt) -> None: ...

    def content_free_texts(self) -> list[str]:
        return ["", "N/A"]

    def weights_checksum(self) -> str:
        return "no weights"

    def computing_in(self, dtype: str) -> AbstractContextManager[None]:
        return contextlib.nullcontext()


def test_a_fake_backend_needs_only_the_protocol():
    task = Task("words", ("sentence",), ("negative", "positive"), "{sentence} So [P]",
                {"negative": ["bad"], "positive": ["good"]}, "accuracy", "")
    examples = [Example({"sentence": s}, y) for s, y in
                [("good good bad", 1), ("bad film", 0), ("good", 1), ("bad bad good", 0), ("good bad bad", 1)]]
    fake: ScoringModel = WordCounter()  # the protocol is met as written: no cast, no ignore
    result = Evaluator(fake, task).score(task.default_prompt, examples)
    assert result.score == pytest.approx(4 / 5)  # the last sentence says "bad" more often than "good"
    assert result.logprobs[0].exp().tolist() == pytest.approx([1 / (1 + torch.e), torch.e / (1 + torch.e)])


@pytest.mark.parametrize("which", ["causal", "masked"])
def test_work_split_to_fit_the_working_memory_gives_the_same_numbers(which, request, task):
    lm = request.getfixturevalue(which)
    template = "{sentence} [T] [T] It was [P]" if which == "causal" else "{sentence} [T] [T] it was [P] ."
    triggers = (lm.tokenize(" the")[-1], lm.tokenize(" plot")[-1])
    prompts = [Prompt(template, MULTI, (a, triggers[1])) for a in (*triggers, lm.tokenize(" movie")[-1])]
    batch = [lm.encode(prompts[0], ex) for ex in task.train]
    words = lm.word_table(prompts[0], task.task.labels)
    gold = [ex.label for ex in task.train]
    whole = lm.working_memory

    def run():
        scored = [r.logprobs for r in Evaluator(lm, task.task, cache=False).score_many(prompts, task.train)]
        return lm.label_logprobs(batch, words).logprobs, lm.trigger_gradient(batch, words, gold), scored

    (logprobs, (grad, loss), scored) = run()
    lm.working_memory = 1  # every pass one row (one example's K prompts for the shared path)
    try:
        assert lm.rows_within(10) == 1 and lm.rows_within(10, backward=True) == 1
        (small_logprobs, (small_grad, small_loss), small_scored) = run()
    finally:
        lm.working_memory = whole
    torch.testing.assert_close(small_logprobs, logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(small_grad, grad, atol=1e-5, rtol=1e-4)
    assert small_loss == pytest.approx(loss, abs=1e-5)
    for a, b in zip(small_scored, scored, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert lm.bytes_per_token() > 0 and lm.bytes_per_token(backward=True) > lm.bytes_per_token()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scores_in_bf16_autocast_match_the_cpu(task):
    cpu, gpu = tiny_causal_lm("llama"), tiny_causal_lm("llama")
    gpu.model.to("cuda")
    gpu.device = torch.device("cuda")
    prompt = Prompt("{sentence} It was [P]", MULTI)
    on_cpu = Evaluator(cpu, task.task).score(prompt, task.train)
    with gpu.computing_in("bf16"):
        on_gpu = Evaluator(gpu, task.task).score(prompt, task.train)
    assert on_gpu.logprobs.device.type == "cpu"          # results come back to the host once scored
    torch.testing.assert_close(on_gpu.logprobs, on_cpu.logprobs, atol=5e-2, rtol=0)   # bf16 activations
    assert next(gpu.model.parameters()).dtype == torch.float32                    # the weights stay as they are
