"""Continuous prompts: conformance in every mode, frozen backbone, learning, artifacts, failures."""

from __future__ import annotations

import json
import math

import pytest
import torch

from autoprompt import AutopromptError, Budget, Evaluator, Prompt, load_prompt
from autoprompt.backends import FrozenLM, weights_checksum
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.results.record import Interrupted
from autoprompt.scoring.scores import EvalResult
from autoprompt.search import SearchContext, SearchSpec, create, run_search
from autoprompt.searchers.continuous import dev_loss, improves
from autoprompt.searchers.continuous.passes import passes
from autoprompt.tasks.base import Example, TaskData
from autoprompt.testing.conformance import check_strategy
from autoprompt.testing.tiny import tiny_generation_task

FAST = {"steps": 6, "eval_every": 2, "batch_size": 4}


def context(lm, data, budget=None, dev=None):
    limit = Budget(budget)
    return SearchContext(lm, data.task, data.train, dev or data.dev, Evaluator(lm, data.task, budget=limit), limit, 0)


def train(searcher, ctx):
    state = searcher.start(ctx)
    while not state.get("done"):
        state = searcher.step(ctx, state)
    return state


@pytest.mark.parametrize("mode", ["prompt", "ptuning", "prefix"])
def test_conformance_causal(mode, causal, task, weights_kept):
    with weights_kept(causal):
        result = check_strategy("ptuning", {"mode": mode, **FAST}, budget=300, lm=causal, data=task)
    assert result.details["trainable_parameters"] > 0 and not result.backbone.requires_grad


@pytest.mark.parametrize("mode", ["prompt", "ptuning"])
def test_conformance_masked(mode, masked, task):
    check_strategy("ptuning", {"mode": mode, **FAST}, budget=300, lm=masked, data=task)


def test_conformance_gpt2_prefix_and_lstm_encoder(gpt2, task):
    check_strategy("ptuning", {"mode": "prefix", "reparam": True, **FAST}, budget=300, lm=gpt2, data=task)
    check_strategy("ptuning", {"mode": "ptuning", "encoder": "lstm", **FAST}, budget=300, lm=gpt2, data=task)


def test_prefix_on_a_masked_lm_is_a_clear_error(masked, task):
    with pytest.raises(AutopromptError, match=r"bert.*past key/values.*mode=prompt"):
        create("ptuning", {"mode": "prefix"}).start(context(masked, task))


def test_hyper_parameters_are_kept_as_given_and_defaults_resolve_per_mode():
    from autoprompt.searchers.continuous import MODE_DEFAULTS  # noqa: PLC0415

    for mode in ("prompt", "ptuning", "prefix"):
        searcher = create("ptuning", {"mode": mode})
        assert searcher.num_tokens is None and searcher.lr is None  # recorded as the user gave them
        defaults = MODE_DEFAULTS[mode]
        assert (searcher.tokens, searcher.learning_rate) == (defaults["num_tokens"], defaults["lr"])
    given = create("ptuning", {"mode": "prefix", "num_tokens": 3, "lr": 0.5})
    assert (given.num_tokens, given.lr, given.tokens, given.learning_rate) == (3, 0.5, 3, 0.5)
    with pytest.raises(AutopromptError, match="lr must be a positive number"):
        create("ptuning", {"lr": -1.0})


def test_a_prefix_is_loaded_without_running_the_model_again(causal, task):
    """The init text's forward is paid once, at the start; a step rebuilds the module from its shapes."""
    searcher = create("ptuning", {"mode": "prefix", "num_tokens": 3})
    ctx = context(causal, task)
    fresh = searcher.build(ctx)
    paid = ctx.budget.forwards
    assert paid == 1
    shaped = searcher.build(ctx, fresh=False)
    assert ctx.budget.forwards == paid and shaped().prefix.shape == fresh().prefix.shape


@pytest.mark.parametrize(("mode", "encoder"), [("prompt", "mlp"), ("ptuning", "mlp"), ("ptuning", "lstm")])
def test_soft_tokens_go_in_front_of_the_manual_template_and_start_at_their_init(mode, encoder, causal, task):
    searcher = create("ptuning", {"mode": mode, "encoder": encoder, "num_tokens": 3})
    ctx = context(causal, task)
    template = searcher.prompt_template(ctx)
    assert [s.kind for s in template.segments[:3]] == ["soft"] * 3
    assert template.segments[3:] == task.task.default_prompt.template.segments
    # an encoder's last layer starts at zero: the pseudo tokens start at the init text's embeddings
    init = causal.embedding_matrix().detach().float().cpu()[searcher._init_ids(ctx, 3)]
    assert torch.equal(searcher.build(ctx)().slots, init)


def test_only_prompt_parameters_get_gradients(causal, task):
    before = weights_checksum(causal.model)
    searcher = create("ptuning", {"mode": "ptuning", **FAST})
    ctx = context(causal, task)
    state = train(searcher, ctx)
    assert weights_checksum(causal.model) == before
    assert all(p.grad is None and not p.requires_grad for p in causal.model.parameters())
    # the encoder's parameters did move
    start = searcher.start(context(causal, task))["params"]
    assert any(not torch.equal(start[k], state["params"][k]) for k in start)


def flipped(lm, data) -> TaskData:
    """A planted task: every label is the class the model does *not* pick with the manual prompt,
    so any prompt starts near 0% and a prompt that learns reaches 100%."""
    preds = Evaluator(lm, data.task).score(data.task.default_prompt, data.train).preds
    target = 1 - int(preds.float().mean().round())
    examples = [Example(ex.fields, target) for ex in data.train]
    return TaskData(data.task, data.protocol, {s: (lambda: examples) for s in ("train", "dev", "test")})


@pytest.mark.parametrize("mode", ["prompt", "ptuning", "prefix"])
def test_learns_a_planted_task(mode, causal, task):
    data = flipped(causal, task)
    params = {"mode": mode, "steps": 40, "eval_every": 10, "lr": 0.05, "patience": 0}
    if mode != "prefix":  # on a 2-layer random model a soft token moves [P] most when it is next to it
        params["template"] = "{sentence} It was [S] [S] [P]"
    searcher = create("ptuning", params)
    ctx = context(causal, data)
    start = searcher.start(ctx)
    ev = Evaluator(causal, data.task)
    first = ev.score(searcher._prompt(ctx, searcher._module(ctx, start["params"])()), data.train)
    state = train(searcher, ctx)
    last = ev.score(searcher.best(ctx, state), data.train)
    gold = torch.tensor([ex.label for ex in data.train])

    def loss(r):
        return float(-r.logprobs.log_softmax(-1)[torch.arange(len(gold)), gold].mean())

    assert last.score > first.score and last.score == 1.0
    assert loss(last) < loss(first)


def test_save_reload_gives_identical_logprobs(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="ptuning", params={"mode": "prompt", **FAST, "gate": False},
                      budget=300, out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    folder = tmp_path / result.run_dir.split(str(tmp_path) + "/")[-1]
    saved = json.loads((folder / "prompt.json").read_text())
    assert saved["soft"] == "soft.safetensors" and (folder / "soft.safetensors").is_file()
    reloaded = load_prompt(folder / "prompt.json")
    assert reloaded.fingerprint == result.prompt_fingerprint
    fresh = Evaluator(causal, task.task).score(reloaded, task.test)
    assert fresh.score == result.scores.test
    # the in-memory prompt, re-made from the saved tensors, scores the same class log-probs
    in_memory = Prompt(reloaded.template, reloaded.verbalizer, soft=SoftPrompt.load(reloaded.soft))
    again = Evaluator(causal, task.task).score(in_memory, task.test)
    assert torch.equal(fresh.logprobs, again.logprobs)
    assert result.details["readout"]["nearest"] and "discrete_dev" in result.details["readout"]


def test_corrupt_or_mismatched_soft_file_is_a_one_line_error(causal, task, tmp_path):
    bad = tmp_path / "soft.safetensors"
    bad.write_bytes(b"not a safetensors file")
    prompt = Prompt("[S] {sentence} It was [P]", task.task.default_prompt.verbalizer, soft=str(bad))
    with pytest.raises(AutopromptError, match="corrupt"):
        Evaluator(causal, task.task).score(prompt, task.dev)
    two = Prompt("[S] [S] {sentence} It was [P]", task.task.default_prompt.verbalizer,
                 soft=SoftPrompt(slots=torch.zeros(1, 32)))
    with pytest.raises(AutopromptError, match=r"2 \[S\] slots but its soft prompt holds 1"):
        Evaluator(causal, task.task).score(two, task.dev)
    with pytest.raises(AutopromptError, match="no soft tensors"):
        Evaluator(causal, task.task).score(Prompt("[S] {sentence} It was [P]", two.verbalizer), task.dev)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(causal, task, tmp_path, monkeypatch):
    spec = SearchSpec(task="tiny", strategy="ptuning", params={"mode": "prompt", **FAST}, budget=300,
                      out=str(tmp_path))
    assert isinstance(run_search(spec, lm=causal, data=task, stop_after=1), Interrupted)
    (folder,) = list((tmp_path / "tiny" / "ptuning").iterdir())
    checkpoint = (folder / "checkpoint.json").read_text()
    from autoprompt.searchers.continuous import encoders  # noqa: PLC0415

    monkeypatch.setattr(encoders.Slots, "forward", lambda self: SoftPrompt(slots=self.vectors * float("nan")))
    with pytest.raises(AutopromptError, match=r"loss became nan.*last good checkpoint"):
        run_search(spec, lm=causal, data=task, resume=folder)
    assert (folder / "checkpoint.json").read_text() == checkpoint
    assert not (folder / "result.json").exists()


def test_resume_equals_an_uninterrupted_run(causal, task, tmp_path):
    params = {"mode": "ptuning", **FAST}
    whole = run_search(SearchSpec(task="tiny", strategy="ptuning", params=params, budget=300, out=str(tmp_path / "a")),
                       lm=causal, data=task)
    spec = SearchSpec(task="tiny", strategy="ptuning", params=params, budget=300, out=str(tmp_path / "b"))
    part = run_search(spec, lm=causal, data=task, stop_after=1)
    assert list((tmp_path / "b").rglob("checkpoint-*.safetensors"))  # the optimiser state lives here
    resumed = run_search(spec, lm=causal, data=task, resume=part.run_dir)
    assert resumed.prompt_fingerprint == whole.prompt_fingerprint
    assert resumed.scores == whole.scores


def test_flat_loss_warns_in_trace_and_result(causal, task, tmp_path):
    params = {"mode": "prompt", "lr": 1e-12, "steps": 8, "eval_every": 4, "flat_steps": 4, "batch_size": 24}
    result = run_search(SearchSpec(task="tiny", strategy="ptuning", params=params, budget=2000, out=str(tmp_path)),
                        lm=causal, data=task)
    assert any("not moved" in w for w in result.warnings)
    trace = next(tmp_path.rglob("trace.jsonl")).read_text()
    assert "not moved" in trace


def test_dev_ties_go_to_the_lower_dev_cross_entropy():
    result = EvalResult(metric="accuracy", score=0.5, logprobs=torch.tensor([[0.0, -1.0], [-2.0, -0.5]]),
                        labels=torch.tensor([0, 1]))
    # by hand: the gold class's softmax probability per row, then the mean negative log
    p0 = 1 / (1 + math.exp(-1.0))
    p1 = math.exp(-0.5) / (math.exp(-2.0) + math.exp(-0.5))
    assert dev_loss(result) == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    assert improves(0.75, 0.9, 0.5, 0.1)          # a higher metric wins whatever the loss
    assert improves(0.5, 0.3, 0.5, 0.4)           # a tie goes to the lower cross-entropy
    assert not improves(0.5, 0.4, 0.5, 0.4)       # an exact tie is not a gain (patience counts it)
    assert not improves(0.25, 0.0, 0.5, 0.4)


@pytest.mark.parametrize("backend", ["causal", "gpt2", "masked"])
def test_soft_slots_equal_the_tokens_whose_embeddings_they_hold(backend, task, request):
    lm = request.getfixturevalue(backend)
    ids = lm.tokenize(" good movie")[:2]
    verbalizer = task.task.default_prompt.verbalizer
    soft = Prompt("{sentence} [S] [S] It was [P]", verbalizer,
                  soft=SoftPrompt(slots=lm.embedding_matrix()[list(ids)].detach().clone()))
    hard = Prompt("{sentence} [T] [T] It was [P]", verbalizer, trigger_ids=ids)
    ev = Evaluator(lm, task.task, batch_size=3)
    assert torch.allclose(ev.score(soft, task.dev).logprobs, ev.score(hard, task.dev).logprobs, atol=1e-5)


@pytest.mark.parametrize("backend", ["causal", "gpt2"])
def test_a_prefix_of_a_texts_keys_and_values_equals_that_text_in_front(backend, task, request):
    lm = request.getfixturevalue(backend)
    assert lm.prefix_special == ()  # so the text in front is exactly the prefix's tokens
    ids = lm.tokenize("the movie was fine")
    verbalizer = task.task.default_prompt.verbalizer
    # the leading space: after the prefix, the sentence is tokenized as it is after a trigger
    soft = Prompt(" {sentence} It was [P]", verbalizer, soft=SoftPrompt(prefix=lm.prefix_from_text(ids)))
    hard = Prompt("[T] [T] [T] [T] {sentence} It was [P]", verbalizer, trigger_ids=ids[:4])
    assert len(ids) == 4
    ev = Evaluator(lm, task.task, batch_size=3)  # several lengths per batch: padding under the prefix too
    assert torch.allclose(ev.score(soft, task.dev).logprobs, ev.score(hard, task.dev).logprobs, atol=1e-5)


def test_the_modes_have_their_own_names():
    from autoprompt.search import create  # noqa: PLC0415

    assert create("prompt_tuning").mode == "prompt" and create("prefix").mode == "prefix"
    assert create("ptuning", {"mode": "prefix"}).params() == create("prefix").params()  # the old spelling works
    with pytest.raises(AutopromptError, match="prefix trains mode=prefix; for mode=prompt use the ptuning strategy"):
        create("prefix", {"mode": "prompt"})


@pytest.mark.parametrize("backend", ["causal", "gpt2"])
@pytest.mark.parametrize("part", ["slots", "prefix"])
def test_packed_training_batches_score_and_differentiate_like_padded_ones(backend, part, task, request):
    lm = request.getfixturevalue(backend)
    torch.manual_seed(0)
    config = lm.model.config
    layers, heads = config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or config.n_head
    head_dim = config.hidden_size // config.num_attention_heads
    tensor = (torch.randn(3, lm.embedding_matrix().shape[1]) if part == "slots"
              else torch.randn(layers, 2, heads, 4, head_dim)).requires_grad_(True)
    template = "[S] [S] [S] {sentence} It was [P]" if part == "slots" else "{sentence} It was [P]"
    prompt = Prompt(template, task.task.default_prompt.verbalizer)
    soft = SoftPrompt(**{part: tensor})
    table = lm.word_table(prompt, task.task.labels)
    batch = [lm.encode(prompt, ex) for ex in task.train[:7]]
    assert len({len(e.ids) for e in batch}) > 1                                 # padding would be needed
    packed = lm.soft_logprobs(batch, table, soft)                                 # [B, C], one packed row
    (grad_packed,) = torch.autograd.grad(packed.logsumexp(-1).sum() + packed[:, 0].sum(), tensor)
    padded = FrozenLM.soft_logprobs(lm, batch, table, soft)                      # FrozenLM's padded batch
    (grad_padded,) = torch.autograd.grad(padded.logsumexp(-1).sum() + padded[:, 0].sum(), tensor)
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_packed, grad_padded, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed.detach(), lm.label_logprobs(batch, table, soft=soft).logprobs, atol=1e-5, rtol=0)


# ---- P-tuning v2's classification head (head=linear) ------------------------------------------------

@pytest.mark.parametrize(("backend", "mode"), [("causal", "prompt"), ("causal", "prefix"), ("gpt2", "prefix"),
                                               ("masked", "prompt")])
def test_conformance_with_a_linear_head(backend, mode, task, request):
    lm = request.getfixturevalue(backend)
    result = check_strategy("ptuning", {"mode": mode, "head": "linear", **FAST}, budget=300, lm=lm, data=task)
    width = lm.output_embedding_matrix().shape[1] + 1
    assert result.details["head_parameters"] == len(task.task.labels) * width
    assert result.details["trainable_parameters"] > result.details["head_parameters"]


def test_a_linear_head_learns_a_planted_task_without_label_words(causal, task):
    data = flipped(causal, task)
    searcher = create("ptuning", {"mode": "prompt", "head": "linear", "steps": 40, "eval_every": 10, "lr": 0.05,
                                  "patience": 0})
    state = train(searcher, context(causal, data))
    found = searcher.best(context(causal, data), state)
    assert not found.verbalizer.words and found.soft.head.shape == (2, causal.embedding_matrix().shape[1] + 1)
    assert Evaluator(causal, data.task).score(found, data.train).score == 1.0


def test_a_head_is_the_label_words_scores_when_it_starts_from_their_embeddings(causal, task):
    """head_init=words: W = the words' output embeddings, b = 0, so its class log-probs are the
    verbalizer's first-token scores normalised over the classes — the head starts at the verbalizer."""
    searcher = create("ptuning", {"mode": "prompt", "head": "linear", "head_init": "words", "num_tokens": 2})
    ctx = context(causal, task)
    soft = searcher.build(ctx)()
    ev = Evaluator(causal, task.task)
    with_head = ev.score(searcher._prompt(ctx, soft), task.dev).logprobs
    words = Prompt(searcher.prompt_template(ctx), task.task.default_prompt.verbalizer,
                   soft=SoftPrompt(slots=soft.slots.detach()))
    plain = ev.score(words, task.dev).logprobs.log_softmax(-1)
    assert torch.allclose(with_head, plain, atol=1e-4)


def test_a_head_prompt_is_saved_predicts_and_refuses_a_generation_task(causal, task, tmp_path):
    from autoprompt.api import predict  # noqa: PLC0415
    from autoprompt.testing import tiny_generation_task  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="ptuning", params={"mode": "prompt", "head": "linear", **FAST,
                                                                "gate": False}, budget=300, out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    reloaded = load_prompt(f"{result.run_dir}/prompt.json")
    assert reloaded.fingerprint == result.prompt_fingerprint and SoftPrompt.load(reloaded.soft).head is not None
    assert Evaluator(causal, task.task).score(reloaded, task.test).score == result.scores.test
    rows = predict(reloaded, [ex.fields for ex in task.test[:3]], model=causal)
    assert {r["label"] for r in rows} <= set(task.task.labels) and set(rows[0]["probs"]) <= set(task.task.labels)
    gen = tiny_generation_task()
    with pytest.raises(AutopromptError, match="head=linear classifies"):
        create("prefix", {"head": "linear"}).start(context(causal, gen))


@pytest.mark.parametrize(("params", "message"), [
    ({"head_init": "words"}, "with `head=verbalizer` there is none"),
    ({"head": "linear", "loss": "word"}, "`head=linear` has no label words — use `loss=class`"),
])
def test_settings_a_head_would_ignore_are_refused(params, message):
    with pytest.raises(AutopromptError, match=message):
        create("prefix", params)


@pytest.mark.parametrize(("mode", "kind"), [("prompt", "classification"), ("prefix", "classification"),
                                            ("prefix", "generation")])
def test_a_batch_split_into_passes_trains_as_the_whole_batch(mode, kind, causal, task):
    """Passes of a few tokens add up to the batch's gradient (on a generation task weighted by each
    example's reference tokens): the trained prompt is the same."""
    data = task if kind == "classification" else tiny_generation_task()
    steps = FAST if kind == "classification" else {**FAST, "steps": 2}
    trained = {}
    for tokens in (1, 100_000):  # every example its own pass; the whole batch in one
        searcher = create("ptuning", {"mode": mode, **steps, "pass_tokens": tokens})
        ctx = context(causal, data)
        assert len(passes(causal, searcher._prompt(ctx, None), data.train[:4], tokens)) == (4 if tokens == 1 else 1)
        trained[tokens] = train(searcher, ctx)["params"]
    for name, value in trained[1].items():
        torch.testing.assert_close(value, trained[100_000][name], atol=1e-5, rtol=1e-4)


def test_the_pass_size_defaults_to_the_precision_the_model_computes_in(causal, task):
    """128 tokens in fp32 (the memory target), 512 in bf16 (speed: small bf16 passes cost most); a
    value given is kept in both."""
    ctx = context(causal, task)
    default, given = create("ptuning", dict(FAST)), create("ptuning", {**FAST, "pass_tokens": 64})
    assert default._pass_tokens(ctx) == 128 and given._pass_tokens(ctx) == 64
    with causal.computing_in("bf16"):
        assert default._pass_tokens(ctx) == 512 and given._pass_tokens(ctx) == 64
