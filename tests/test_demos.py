"""Prompts with demonstrations: layout, exact shared-cache scoring, KATE retrieval, JSON, budget."""

from __future__ import annotations

import json

import pytest
import torch

from autoprompt import AutopromptError, Budget, Evaluator, Prompt
from autoprompt.prompts import Demonstration, Demonstrations, load_prompt, save_prompt
from autoprompt.scoring.retrieval import Retriever
from autoprompt.scoring.sharing import MIN_SHARED_BLOCK
from autoprompt.testing import tiny_causal_lm
from tests.test_evaluator import MULTI, reference_causal, reference_masked

WORDS = {"negative": ["bad"], "positive": ["good"]}


def demos_of(examples, labels, k=4, **kw) -> Demonstrations:
    return Demonstrations(tuple(Demonstration(ex.fields, labels[ex.label]) for ex in examples[:k]), **kw)


def test_layout_causal_first_masked_after(causal, masked, task):
    demos = Demonstrations((Demonstration({"sentence": "a fine film"}, "positive"),
                            Demonstration({"sentence": "a dull plot"}, "negative")), separator="\n")
    query = task.test[0]
    text = causal.decode(causal.encode(Prompt("{sentence} It was [P]", WORDS, demos=demos), query).ids)
    assert text == f"a fine film It was good\na dull plot It was bad\n{query.fields['sentence']} It was"
    enc = masked.encode(Prompt("{sentence} it was [P] .", WORDS, demos=demos), query)
    shown = masked.decode(enc.ids)
    assert shown.index(query.fields["sentence"]) < shown.index("a fine film") < shown.index("a dull plot")
    assert enc.ids[enc.predict_at] == masked.tokenizer.mask_token_id          # the query's mask, not a demo's
    assert shown.count(masked.tokenizer.mask_token) == 1 and "a fine film it was good" in shown


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_demonstration_cache_equals_a_plain_forward(arch, task):
    lm = tiny_causal_lm(arch)
    prompts = [Prompt("{sentence} It was [P]", MULTI, demos=demos_of(task.train[i:], task.task.labels, k=6))
               for i in (0, 3)]
    prompts.append(prompts[0].with_triggers(()).with_demos(None))  # and a zero-shot prompt beside them
    evaluator = Evaluator(lm, task.task, batch_size=4)
    got = evaluator.score_many(prompts, task.test)
    assert evaluator.stats["shared_block_tokens"] > 0                            # the cache path ran
    assert len(lm.encode(prompts[0], task.test[0]).ids) > MIN_SHARED_BLOCK
    plain = Evaluator(lm, task.task, shared_prefix=False).score_many(prompts, task.test)
    for prompt, shared, separate in zip(prompts, got, plain, strict=True):
        expected = reference_causal(lm, prompt, task.test, task.task.labels)   # one unbatched forward per word
        torch.testing.assert_close(shared.logprobs, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(separate.logprobs, expected, atol=1e-5, rtol=0)


def test_masked_demonstrations_equal_a_plain_forward(masked, task):
    prompt = Prompt("{sentence} it was [P] .", {"negative": ["bad", "plots"], "positive": ["good"]},
                    demos=demos_of(task.train, task.task.labels, k=2))
    got = Evaluator(masked, task.task, batch_size=3).score(prompt, task.test).logprobs
    torch.testing.assert_close(got, reference_masked(masked, prompt, task.test, task.task.labels), atol=1e-5, rtol=0)


def test_demonstrations_change_the_scores_and_the_fingerprint(causal, task):
    zero = Prompt("{sentence} It was [P]", WORDS)
    shot = zero.with_demos(demos_of(task.train, task.task.labels))
    assert zero.fingerprint != shot.fingerprint and "demos" not in zero.to_json()
    a, b = Evaluator(causal, task.task).score_many([zero, shot], task.test)
    assert not torch.allclose(a.logprobs, b.logprobs)


def test_budget_counts_example_forwards_and_tokens(causal, task):
    budget = Budget(10_000)
    prompt = Prompt("{sentence} It was [P]", WORDS, demos=demos_of(task.train, task.task.labels))
    Evaluator(causal, task.task, budget=budget).score(prompt, task.dev)
    assert budget.forwards == len(task.dev)                                     # one per example, as always
    assert budget.tokens == sum(len(causal.encode(prompt, ex).ids) for ex in task.dev)


def test_json_round_trip_and_predict_without_data(causal, task, tmp_path):
    from autoprompt.api import predict  # noqa: PLC0415

    fixed = Prompt("{sentence} It was [P]", WORDS, demos=demos_of(task.train, task.task.labels, separator=" | "))
    pool = Prompt("{sentence} It was [P]", WORDS,
                  demos=Demonstrations(pool=demos_of(task.train, task.task.labels, k=8).examples, k=2,
                                       overflow="drop"))
    for prompt in (fixed, pool):
        path = tmp_path / f"{prompt.fingerprint}.json"
        save_prompt(prompt, path)
        back = load_prompt(path)
        assert back == prompt and back.fingerprint == prompt.fingerprint and back.demos == prompt.demos
        rows = tmp_path / "new.jsonl"
        rows.write_text("\n".join(json.dumps({"sentence": ex.fields["sentence"]}) for ex in task.test[:3]))
        out = predict(path, rows, model=causal)
        labels = Evaluator(causal, task.task, cache=False).score(prompt, task.test[:3]).preds.tolist()
        assert [r["label"] for r in out] == [task.task.labels[i] for i in labels]


def test_bad_demonstrations_are_one_line_errors(causal, task):
    with pytest.raises(AutopromptError, match="not among the prompt's labels"):
        Prompt("{sentence} It was [P]", WORDS, demos=Demonstrations((Demonstration({"sentence": "x"}, "neutral"),)))
    with pytest.raises(AutopromptError, match="lack the template field"):
        Prompt("{sentence} It was [P]", WORDS, demos=Demonstrations((Demonstration({"text": "x"}, "positive"),)))
    with pytest.raises(AutopromptError, match=r"prompt file .*demos"):
        Prompt.from_json({"template": "{sentence} [P]", "verbalizer": WORDS, "demos": {"k": -1}}, "prompt file x")
    long = Demonstration({"sentence": " ".join(["plot"] * 300)}, "positive")
    too_long = Prompt("{sentence} It was [P]", WORDS, demos=Demonstrations((long,) * 4))
    with pytest.raises(AutopromptError, match=r"4 demonstrations \(\d+ tokens\) and the query .* context of"):
        causal.encode(too_long, task.test[0])
    dropped = causal.encode(too_long.with_demos(Demonstrations((long,) * 4, overflow="drop")), task.test[0])
    assert len(dropped.ids) <= causal.context_length


class PlantedEmbeddings:
    """A tiny model whose sentence embedding of a text is planted by hand (its first token's row)."""

    def __init__(self, lm, vectors: dict[str, list[float]]) -> None:
        self.lm, self.vectors = lm, vectors
        self.kind, self.max_length = lm.kind, lm.max_length

    def tokenize(self, text):
        return self.lm.tokenize(text)

    def sentence_embeddings(self, texts):
        by_ids = {tuple(self.lm.tokenize(t)): v for t, v in self.vectors.items()}
        return torch.tensor([by_ids[tuple(t)] for t in texts])


def test_similar_picks_the_planted_nearest_neighbours(causal):
    vectors = {"a film": [1.0, 0.0], "a plot": [0.0, 1.0], "the film": [0.9, 0.1], "the plot": [0.2, 0.8],
               "an ending": [-1.0, -0.1]}
    pool = tuple(Demonstration({"sentence": t}, "positive") for t in ("a film", "a plot", "the plot", "an ending"))
    prompt = Prompt("{sentence} It was [P]", WORDS, demos=Demonstrations(pool=pool, k=2))
    chosen = Retriever(PlantedEmbeddings(causal, vectors)).choose(prompt, [{"sentence": "the film"},
                                                                            {"sentence": "a plot"}])
    # nearest last (next to the query on a causal LM); the query itself is never its own demonstration
    assert [[d.fields["sentence"] for d in row] for row in chosen] == [["the plot", "a film"], ["a film", "the plot"]]


@pytest.mark.parametrize("arch", ["causal", "gpt2", "masked"])
def test_sentence_embedding_is_the_mean_of_the_last_hidden_states(arch, request):
    lm = request.getfixturevalue(arch)
    texts = [lm.tokenize("the film was good"), lm.tokenize("bad")]
    got = lm.sentence_embeddings(texts)  # one padded batch
    for row, ids in zip(got, texts, strict=True):
        with torch.no_grad():
            hidden = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(row, hidden.mean(0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("params", [{"method": "random"}, {"method": "random", "order": "entropy", "num_orders": 3},
                                    {"method": "similar", "k": 2, "pool_size": 10},
                                    {"method": "search", "num_candidates": 3}])
def test_demos_conformance(params, causal, task):
    from autoprompt.testing.conformance import check_strategy  # noqa: PLC0415

    result = check_strategy("demos", params, budget=400, lm=causal, data=task)
    assert result.budget.tokens > 0 and result.details["method"] == params["method"]


def test_demos_strategy_shows_train_examples_and_keeps_them_out_of_selection(causal, task, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="demos", params={"method": "search", "num_candidates": 3, "gate": False},
                      budget=400, out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    shown = result.prompt["demos"]["examples"]
    train = {ex.fields["sentence"]: task.task.labels[ex.label] for ex in task.train}
    assert len(shown) == 2 and all(train[d["fields"]["sentence"]] == d["label"] for d in shown)  # one per class
    assert {d["label"] for d in shown} == set(task.task.labels)
    # search fits on all of train (pool and scoring set): the final selection is dev alone
    assert result.split_sizes["selection"] == len(task.dev)
    similar = run_search(SearchSpec(task="tiny", strategy="demos", params={"method": "similar", "pool_size": 8,
                                                                          "gate": False}, budget=400,
                                    out=str(tmp_path)), lm=causal, data=task)
    assert len(similar.prompt["demos"]["pool"]) == 8 and similar.prompt["demos"]["k"] == 2
    assert similar.split_sizes["selection"] == len(task.dev) + len(task.train) - 8


def test_demos_search_refuses_a_pool_that_leaves_nothing_to_judge_on(causal, task, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="demos", params={"method": "search", "pool_size": len(task.train)},
                      budget=400, out=str(tmp_path))
    with pytest.raises(AutopromptError, match="`pool_size` below the 24 train examples"):
        run_search(spec, lm=causal, data=task)


def test_demonstrations_fill_the_model_context_not_the_truncation_length(causal, task):
    # `max_length` truncates one input's fields; the demonstration block may use the model's context
    assert causal.context_length == causal.model.config.max_position_embeddings > causal.max_length
    demo = Demonstration({"sentence": " ".join(["plot"] * causal.max_length)}, "positive")
    enc = causal.encode(Prompt("{sentence} It was [P]", WORDS, demos=Demonstrations((demo,))), task.test[0])
    assert causal.max_length < len(enc.ids) <= causal.context_length
