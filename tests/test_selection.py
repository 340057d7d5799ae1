"""Calibration, the selection protocol (objective, gate, deltas) and what the discrete searches hand back."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import EvalResult, Evaluator, Example, Prompt, TaskData, load_prompt, load_task, save_prompt
from autoprompt.cli import app
from autoprompt.search import SearchSpec, available, run_search
from autoprompt.search.registry import variant as _variant
from autoprompt.search.selection import bootstrap_delta, choose, margins, objective_values, paired_gain
from autoprompt.testing import tiny_causal_lm, tiny_task
from autoprompt.testing.tiny import toy_task_file

runner = CliRunner()


def _flat(rows: list[list[float]]) -> list[float]:
    return [v for row in rows for v in row]


def _hand_probs(logprobs: torch.Tensor) -> list[list[float]]:
    """Each row's class distribution, one exp and one sum at a time."""
    rows = []
    for row in logprobs.tolist():
        exps = [math.exp(v) for v in row]
        rows.append([e / sum(exps) for e in exps])
    return rows


def _hand_calibrated(raw: torch.Tensor, prior_rows: torch.Tensor) -> list[list[float]]:
    prior = [sum(col) / len(col) for col in zip(*_hand_probs(prior_rows), strict=True)]
    out = []
    for row in _hand_probs(raw):
        scaled = [p / q for p, q in zip(row, prior, strict=True)]
        out.append([s / sum(scaled) for s in scaled])
    return out


def test_contextual_calibration_equals_hand_computation(causal, task):
    ev = Evaluator(causal, task.task)
    manual = task.task.default_prompt
    content_free = [Example({"sentence": filler}, 0) for filler in ("", "N/A")]
    expected = _hand_calibrated(ev.score(manual, task.dev).logprobs, ev.score(manual, content_free).logprobs)
    stored = ev.calibrate([manual], "contextual")[0]
    on_the_fly = manual.with_calibration("contextual")  # no stored prior: estimated when scored
    for prompt in (stored, on_the_fly):
        got = ev.score(prompt, task.dev).logprobs.exp().tolist()
        assert _flat(got) == pytest.approx(_flat(expected), abs=1e-5)


def test_prior_calibration_equals_hand_computation(causal, task):
    ev = Evaluator(causal, task.task)
    manual = task.task.default_prompt
    expected = _hand_calibrated(ev.score(manual, task.dev).logprobs, ev.score(manual, task.train).logprobs)
    calibrated = ev.calibrate([manual], "prior", task.train)[0]
    assert calibrated.calibration.method == "prior"
    assert set(calibrated.calibration.log_prior) == {"negative", "positive"}
    got = ev.score(calibrated, task.dev).logprobs.exp().tolist()
    assert _flat(got) == pytest.approx(_flat(expected), abs=1e-5)
    with pytest.raises(Exception, match="no stored class prior"):
        ev.score(manual.with_calibration("prior"), task.dev)


def _gpt2_with_prior(boost: float):
    """A tiny GPT-2 whose head adds ``boost`` to the word "good" on every input: a planted label prior.

    The final layer norm's gain on one hidden unit is zeroed and its bias set to 1, so that unit
    is the constant 1 everywhere; the (untied) head reads it only for "good".
    """
    lm = tiny_causal_lm("gpt2", tie=False)
    good = lm.tokenize(" good")[0]
    with torch.no_grad():
        lm.model.transformer.ln_f.weight[0] = 0.0
        lm.model.transformer.ln_f.bias[0] = 1.0
        head = lm.model.get_output_embeddings().weight
        head[:, 0] = 0.0
        head[good, 0] = boost
    return lm


@pytest.mark.parametrize("method", ["contextual", "prior"])
def test_a_planted_label_prior_is_removed(method):
    data = tiny_task(n=64, seed=3)
    manual = data.task.default_prompt
    preds = {}
    for boost in (0.0, 8.0):
        ev = Evaluator(_gpt2_with_prior(boost), data.task)
        raw = ev.score(manual, data.test)
        calibrated = ev.score(ev.calibrate([manual], method, data.train)[0], data.test)
        preds[boost] = (raw.preds, calibrated.preds)
    assert (preds[8.0][0] == 1).all()  # the planted prior decides every input
    assert (preds[0.0][0] == 0).any()
    # calibrated, the biased model predicts what the unbiased one does (exact for one content-free
    # input or a constant bias; the average over several inputs weights them slightly differently)
    assert (preds[8.0][1] == preds[0.0][1]).float().mean() >= 0.9


def test_margin_objective_and_paired_gain_by_hand():
    logprobs = torch.tensor([[-0.1, -2.0, -3.0], [-1.0, -0.5, -4.0]])
    labels = torch.tensor([0, 2])
    assert margins(logprobs, labels).tolist() == pytest.approx([1.9, -3.5])
    result = EvalResult("accuracy", 0.0, logprobs, labels)
    by_hand = [row[y] - math.log(sum(math.exp(v) for v in row)) for row, y in zip(logprobs.tolist(), [0, 2])]
    assert objective_values(result, "loglik").tolist() == pytest.approx(by_hand)
    assert objective_values(result, "accuracy").tolist() == [1.0, 0.0]
    gain, se = paired_gain(torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([0.0, 1.0, 1.0, 2.0]))
    diffs = [1.0, 1.0, 2.0, 4.0]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 3)
    assert gain == pytest.approx(mean) and se == pytest.approx(sd / 2)


def test_bootstrap_interval_brackets_the_delta(causal, task):
    ev = Evaluator(causal, task.task)
    a = ev.score(task.task.default_prompt, task.test)
    b = ev.score(Prompt("{sentence} [P]", {"negative": ["bad"], "positive": ["good"]}), task.test)
    d = bootstrap_delta(a, b, n_boot=300)
    assert d["delta"] == pytest.approx(a.score - b.score)
    assert d["ci95"][0] <= d["delta"] <= d["ci95"][1] and d["se"] >= 0 and d["n"] == len(task.test)
    same = bootstrap_delta(a, a, n_boot=50)
    assert same["delta"] == 0 and same["ci95"] == [0, 0] and same["se"] == 0


def test_the_gate_needs_evidence(causal, task):
    ev = Evaluator(causal, task.task)
    manual = task.task.default_prompt
    other = Prompt("{sentence} [P]", manual.verbalizer)
    strict = choose(ev, [other], manual, task.dev, min_gain=1e9)
    assert strict.chosen == manual and not strict.reliable and "no reliable improvement" in strict.message
    # a candidate identical in scores to the manual prompt never wins: ties keep the manual prompt
    twin = choose(ev, [manual.with_meta({"copy": True})], manual, task.dev, min_gain=0)
    assert twin.chosen.fingerprint == manual.fingerprint and not twin.reliable


def _random_label_task(seed: int = 0) -> TaskData:
    """The tiny sentiment sentences with labels drawn at random: nothing to find."""
    base = tiny_task(n=64, seed=seed)
    rng = random.Random(seed)
    splits = {name: [Example(ex.fields, rng.randrange(2)) for ex in base.split(name)]
              for name in ("train", "dev", "test")}
    return TaskData(base.task, {"shots": None, "data_seed": seed, "random_labels": True},
                    {name: (lambda name=name: splits[name]) for name in splits})


SMALL = {"random": {"num_candidates": 4, "rescore_examples": 16},
         "gradient": {"num_candidates": 4, "batch_size": 8, "rescore_examples": 16},
         "verbalizer": {"k": 4, "n_pairs": 8},
         "paraphrase": {"num_paraphrases": 2, "score_examples": 16},
         "ptuning": {"mode": "prompt", "steps": 6, "eval_every": 2, "batch_size": 8},
         "rule": {"rules": "direct,centroid"}}  # channel reads every input once per label word: over this budget


@pytest.mark.parametrize("name", sorted(set(available()) - {"manual"}))
def test_on_random_labels_every_strategy_reports_the_manual_prompt(name, causal, tmp_path):
    data = _random_label_task()
    result = run_search(SearchSpec(task="tiny", strategy=name, params=SMALL.get(name, {}), budget=1500,
                                   out=str(tmp_path)), lm=causal, data=data)
    assert result.prompt_fingerprint == data.task.default_prompt.fingerprint, result.selection
    assert result.selection["reliable"] is False
    assert (result.scores.dev, result.scores.test) == (result.baseline.dev, result.baseline.test)
    assert result.deltas["test"]["delta"] == 0


def test_a_saved_calibrated_prompt_scores_alike_everywhere(tmp_path, causal, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    data = load_task(str(spec))
    ev = Evaluator(causal, data.task)
    calibrated = ev.calibrate([data.task.default_prompt], "prior", data.train)[0]
    save_prompt(calibrated, tmp_path / "prompt.json")
    reloaded = load_prompt(tmp_path / "prompt.json")
    assert reloaded.fingerprint == calibrated.fingerprint != data.task.default_prompt.fingerprint
    api = ev.score(reloaded, data.test)

    evaluated = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--prompt",
                                    str(tmp_path / "prompt.json"), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    cli = json.loads(evaluated.output[evaluated.output.index("{"):])
    assert cli["score"] == pytest.approx(api.score) and cli["calibration"]["method"] == "prior"
    assert cli["per_class"] == api.per_class(data.task.labels)

    rows = tmp_path / "new.jsonl"
    rows.write_text("".join(json.dumps(ex.fields) + "\n" for ex in data.test))
    predicted = runner.invoke(app, ["predict", "--prompt", str(tmp_path / "prompt.json"), "--input", str(rows),
                                    "--model", str(tiny_model_dir)])
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in predicted.output.splitlines() if line.startswith("{")]
    probs = api.logprobs.exp()
    for line, p in zip(lines, probs, strict=True):
        assert [line["probs"][lab] for lab in data.task.labels] == pytest.approx(p.tolist(), abs=1e-5)


def test_calibrated_and_uncalibrated_runs_never_share_a_leaderboard_row():
    assert _variant("gradient", {"calibration": "prior"}) != _variant("gradient", {"calibration": "none"})
    assert "calibration=prior" in _variant("gradient", {"calibration": "prior"})
    assert "calibration" not in _variant("manual", {"calibration": "none"})


def test_gradient_triggers_are_text_that_encodes_back(causal, task, tmp_path):
    allowed = causal.stable_word_tokens().nonzero()[:, 0].tolist()
    assert allowed and all(causal.tokenize(causal.tokenizer.decode([i])) == (i,) for i in allowed)
    assert set(allowed) <= set(causal.word_start_tokens().nonzero()[:, 0].tolist())
    result = run_search(SearchSpec(task="tiny", strategy="gradient", budget=400, out=str(tmp_path),
                                   params={**SMALL["gradient"], "gate": False, "fluency": 0.5}), lm=causal, data=task)
    ids = result.prompt["trigger_ids"]
    assert result.triggers == [causal.tokenizer.decode([i]) for i in ids]
    assert result.trigger_text == causal.tokenizer.decode(ids) and "Ġ" not in result.trigger_text
    trace = [json.loads(line) for line in open(f"{result.run_dir}/trace.jsonl")]
    assert all("fluency_nll" in row and row["fluency_nll"] > 0 for row in trace)


def test_gradient_ensemble_is_one_artifact(causal, task, tmp_path):
    result = run_search(SearchSpec(task="tiny", strategy="gradient", budget=600, out=str(tmp_path),
                                   params={**SMALL["gradient"], "gate": False, "ensemble": 3}), lm=causal, data=task)
    candidates = result.selection["candidates"]
    assert any("ensemble" in c["prompt"] and len(c["prompt"]["ensemble"]) == 3 for c in candidates)
