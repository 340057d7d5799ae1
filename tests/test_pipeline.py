"""Searches that build on each other: warm starts, pipelines, `auto`, cross-strategy ensembles."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import AutopromptError, Evaluator
from autoprompt.cli import app
from autoprompt.cli.common import out as cli_out
from autoprompt.cli.searching import _show_run as show_run
from autoprompt.prompts import Demonstration, Demonstrations, Ensemble, Prompt, Template, load_prompt, save_prompt
from autoprompt.results.leaderboard import load_rows
from autoprompt.results.recording import record_finished
from autoprompt.search import SearchSpec, available, create, run_pipeline, run_search
from autoprompt.search import finish as finish_module
from autoprompt.search.auto import choose_stages
from autoprompt.search.stages import parse_stages, split_train, stage_budgets
from autoprompt.tasks.base import Example, TaskData
from autoprompt.testing.conformance import check_warm_start
from autoprompt.testing.tiny import tiny_task, toy_task_file

SMALL = {"random": {"num_candidates": 3, "rescore_examples": 6},
         "gradient": {"num_candidates": 4, "batch_size": 6, "rescore_examples": 8},
         "paraphrase": {"sources": "manual,mine", "score_examples": 8},
         "verbalizer": {"k": 4, "n_pairs": 5},
         **{n: {"steps": 4, "eval_every": 2, "batch_size": 4} for n in ("ptuning", "prefix", "prompt_tuning")}}
PIPE = {"gradient.num_candidates": 3, "gradient.batch_size": 6, "gradient.rescore_examples": 8,
        "verbalizer.k": 4, "verbalizer.n_pairs": 4}


@pytest.mark.parametrize("name", sorted(available()))
def test_warm_start_keeps_every_part_it_does_not_search(name, causal, task):
    params = SMALL.get(name, {})
    budget = max(300, create(name, params).minimum_budget(len(task.train), len(task.dev)))
    check_warm_start(name, params, budget=budget, lm=causal, data=task)


def test_warm_start_result_reports_gain_over_start_and_manual(causal, task, tmp_path):
    start = Prompt("Review: {sentence} It was [P]", {"negative": ["awful"], "positive": ["nice"]},
                   meta={"task": task.task.name})
    save_prompt(start, tmp_path / "start.json")
    result = run_search(SearchSpec(task="tiny", strategy="manual", budget=200, out=str(tmp_path),
                                   start=str(tmp_path / "start.json")), lm=causal, data=task)
    assert result.prompt_fingerprint == start.fingerprint  # manual from a start reports the start
    assert result.start["deltas"]["test"]["delta"] == 0
    assert result.deltas["test"]["delta"] == pytest.approx(result.scores.test - result.baseline.test)
    assert result.variant.endswith(f"from {start.fingerprint[:8]}")
    record_finished(result, None, tmp_path)
    assert load_rows(tmp_path / "leaderboard.db")[0]["start_fingerprint"] == start.fingerprint


def test_start_for_another_task_or_model_is_refused(causal, task, tmp_path):
    for meta, fragment in (({"task": "sst2"}, "was found for task sst2"), ({"model": "gpt2"}, "was found on model")):
        path = tmp_path / f"{fragment[:5]}.json"
        save_prompt(Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]}, meta=meta), path)
        with pytest.raises(AutopromptError, match=fragment):
            run_search(SearchSpec(task="tiny", strategy="demos", budget=300, out=str(tmp_path), start=str(path)),
                       lm=causal, data=task)


def test_stage_parameters_and_unknown_stages_are_one_line_errors():
    assert parse_stages("verbalizer,demos", {"demos.method": "search", "calibration": "none"})[1].params == \
        {"method": "search", "calibration": "none"}
    with pytest.raises(AutopromptError, match="unknown strategy 'nope'"):
        parse_stages("verbalizer,nope", {})
    with pytest.raises(AutopromptError, match="is for stage gradient, which is not in this pipeline"):
        parse_stages("verbalizer,demos", {"gradient.num_candidates": 3})
    with pytest.raises(AutopromptError, match="no stage of verbalizer, demos has a parameter 'lr'"):
        parse_stages("verbalizer,demos", {"lr": 0.1})


def test_budget_rule_respects_minimums_and_total():
    assert stage_budgets(1000, 0, [100, 200], [1, 1]) == 100 + 350
    assert stage_budgets(1000, 400, [200], [1]) == 600  # the last stage gets what is left
    assert stage_budgets(300, 0, [100, 200], [3, 1]) == 100  # nothing above the minimums to share


def test_split_train_is_stratified_and_disjoint(task):
    fit, check = split_train(task.train, 0.5, seed=0)
    assert not {id(e) for e in fit} & {id(e) for e in check} and len(fit) + len(check) == len(task.train)
    assert sorted(e.label for e in check).count(0) == sorted(e.label for e in check).count(1)
    assert split_train(task.train, 0.5, seed=0) == (fit, check)


def _pipeline(causal, task, out, **kw):
    spec = SearchSpec(task="tiny", strategy="verbalizer,demos,gradient", params={**PIPE, **kw.pop("params", {})},
                      budget=kw.pop("budget", 1500), out=str(out), seed=1)
    return run_pipeline(spec, lm=causal, data=task, **kw)


def test_pipeline_chains_stages_within_the_total_budget(causal, task, tmp_path):
    result = _pipeline(causal, task, tmp_path)
    stages = result.details["stages"]
    assert [s["strategy"] for s in stages] == ["verbalizer", "demos", "gradient"]
    assert sum(s["budget"] for s in stages) == result.budget.used <= 1500
    previous = task.task.default_prompt.fingerprint
    for stage in stages:  # each stage starts from the prompt the previous stage reported
        spec = json.loads((Path(stage["run_dir"]) / "spec.json").read_text())
        summary = json.loads((Path(stage["run_dir"]) / "stage.json").read_text())
        assert summary["start_fingerprint"] == previous
        assert (spec["start"] is None) == (stage["stage"] == 1)
        previous = stage["prompt_fingerprint"]
        assert stage["budget"] <= stage["budget_given"]
    assert not list(Path(result.run_dir).glob("stages/*/result.json"))  # stages are not leaderboard rows
    record_finished(result, None, tmp_path)  # the caller records (api.search does)
    rows = load_rows(tmp_path / "leaderboard.db")
    assert len(rows) == 1 and [s["strategy"] for s in json.loads(rows[0]["stages"])] == \
        ["verbalizer", "demos", "gradient"]
    assert result.selection["detectable_gain"] is None or result.selection["detectable_gain"] >= 0


def test_resume_inside_the_second_stage_equals_the_uninterrupted_run(causal, task, tmp_path):

    class Killed(Exception):
        pass

    def kill_in_stage_two(step, info):  # after the first checkpointed step of stage 2, as a kill -9 would
        if any((tmp_path / "cut").rglob("2-demos")):
            raise Killed

    search = {"demos.method": "search", "demos.num_candidates": 2}
    whole = _pipeline(causal, task, tmp_path / "whole", params=search)
    with pytest.raises(Killed):
        _pipeline(causal, task, tmp_path / "cut", params=search, on_step=kill_in_stage_two)
    folder = next((tmp_path / "cut").glob("tiny/*/*"))
    assert (folder / "stages" / "1-verbalizer" / "stage.json").is_file()
    assert not (folder / "stages" / "2-demos" / "stage.json").is_file()
    assert (folder / "stages" / "2-demos" / "checkpoint.json").is_file()
    resumed = run_pipeline(SearchSpec("", ""), lm=causal, data=task, resume=folder)
    assert resumed.prompt_fingerprint == whole.prompt_fingerprint
    assert resumed.scores == whole.scores and resumed.budget.used == whole.budget.used
    assert [s["prompt_fingerprint"] for s in resumed.details["stages"]] == \
        [s["prompt_fingerprint"] for s in whole.details["stages"]]


def test_dev_is_read_once_by_the_final_gate(causal, task, tmp_path, monkeypatch):
    dev = {id(e) for e in task.dev}
    reads = []
    real_score_many, real_choose = Evaluator.score_many, finish_module.choose

    def score_many(self, prompts, examples, progress=False):
        if dev & {id(e) for e in examples}:
            reads.append("score")
        return real_score_many(self, prompts, examples, progress)

    def choose(evaluator, candidates, manual, examples, *args, **kwargs):
        if dev & {id(e) for e in examples}:
            reads.append("gate")
        return real_choose(evaluator, candidates, manual, examples, *args, **kwargs)

    monkeypatch.setattr(Evaluator, "score_many", score_many)
    monkeypatch.setattr(finish_module, "choose", choose)
    _pipeline(causal, task, tmp_path)
    # the gate (its scoring inside it), then the reported dev scores; nothing before the gate
    assert reads[:2] == ["gate", "score"] and reads.count("gate") == 1, reads


def _random_labels(data: TaskData, seed: int) -> TaskData:
    rng = random.Random(seed)
    splits = {s: [Example(dict(e.fields), rng.randrange(2)) for e in data.split(s)] for s in ("train", "dev", "test")}
    return TaskData(data.task, data.protocol, {s: (lambda s=s: splits[s]) for s in splits})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_labels_report_the_manual_prompt(causal, seed, tmp_path):
    """No prompt can beat chance on labels drawn at random: the pipeline's one gate, with its threshold
    corrected for the candidates it weighs, reports the manual prompt."""
    data = _random_labels(tiny_task(n=48), seed)
    result = _pipeline(causal, data, tmp_path)
    assert result.prompt_fingerprint == data.task.default_prompt.fingerprint, result.selection["message"]
    assert result.selection["reliable"] is False


def test_ensemble_of_two_different_prompts_scores_as_the_mean_of_their_calibrated_logprobs(causal, task):
    ev = Evaluator(causal, task.task)
    demos = Demonstrations((Demonstration(dict(task.train[0].fields), "negative"),
                            Demonstration(dict(task.train[1].fields), "positive")))
    one = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]}, demos=demos)
    two = Prompt(Template("Review: {sentence} [T] [P]"), {"negative": ["awful"], "positive": ["nice"]}, (5,))
    one, two = ev.calibrate([one, two], "prior", task.train)
    both = ev.score(Ensemble((one, two), (1.0, 1.0)), task.test).logprobs
    expected = (ev.score(one, task.test).logprobs + ev.score(two, task.test).logprobs) / 2
    torch.testing.assert_close(both, expected, atol=1e-5, rtol=0)
    assert one.calibration.active and two.calibration.active


def test_auto_rule_reads_the_features():
    base = {"classes": 2, "manual_bias": 0.5, "demos_fit": True, "demo_tokens": 60}
    assert [s for s, _ in choose_stages(base, "light", False)[0]] == ["demos", "rule"]
    assert [s for s, _ in choose_stages({**base, "classes": 6}, "light", False)[0]] == ["verbalizer", "demos", "rule"]
    assert [s for s, _ in choose_stages({**base, "manual_bias": 0.9}, "medium", False)[0]] == \
        ["verbalizer", "demos", "rule", "gradient"]
    assert dict(choose_stages(base, "light", False)[0])["rule"] == {"rules": "direct,channel,centroid"}
    assert [s for s, _ in choose_stages(base, "light", True)[0]] == ["ptuning"]
    assert [s for s, _ in choose_stages({**base, "demos_fit": False}, "light", False)[0]] == ["verbalizer"]


def test_auto_runs_and_records_its_choice(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="auto", params={"demos.num_candidates": 2}, budget=1500, out=str(tmp_path))
    result = run_pipeline(spec, lm=causal, data=task)
    auto = result.details["auto"]
    assert auto["features"]["classes"] == 2 and auto["reasons"]
    assert auto["crossfit"] and result.details["protocol"]["crossfit"]  # 12 dev examples: cross-fitted
    assert [s["fold"] for s in result.details["stages"]] == [1] * len(auto["stages"]) + [2] * len(auto["stages"])
    plain = run_pipeline(SearchSpec(task="tiny", strategy="auto", params={"crossfit": "false"}, budget=1500,
                                    out=str(tmp_path)), lm=causal, data=task)
    assert not plain.details["protocol"].get("crossfit") and plain.selection["n"] == len(task.dev)
    assert result.budget.used <= 800


runner = CliRunner()


def _cli_error(result, fragment):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.strip().splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(errors) == 1 and fragment in errors[0], result.output


def test_cli_pipeline_bad_input(tmp_path, tiny_model_dir):
    toml = toy_task_file(tmp_path)
    common = ["search", "--task", str(toml), "--model", str(tiny_model_dir), "--out", str(tmp_path / "runs")]
    _cli_error(runner.invoke(app, [*common, "--strategy", "verbalizer,bogus"]), "unknown strategy 'bogus'")
    _cli_error(runner.invoke(app, [*common, "--strategy", "verbalizer,demos", "--param", "gradient.init=a"]),
               "not in this pipeline")
    _cli_error(runner.invoke(app, [*common, "--strategy", "verbalizer,demos", "--budget", "20"]),
               "below the sum of the stages' minimums")
    other = tmp_path / "other.json"
    save_prompt(Prompt("{text} [P]", {"a": ["x"]}, meta={"task": "sst2"}), other)
    _cli_error(runner.invoke(app, [*common, "--strategy", "demos", "--from", str(other)]), "was found for task sst2")
    _cli_error(runner.invoke(app, [*common, "--strategy", "demos", "--from", str(tmp_path / "missing.json")]),
               "does not exist")


def test_cli_pipeline_dry_run_prints_each_stage(tmp_path, tiny_model_dir):
    toml = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(toml), "--model", str(tiny_model_dir), "--strategy",
                                 "verbalizer,demos", "--dry-run", "--out", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{"):])
    assert [s["strategy"] for s in plan["stages"]] == ["verbalizer", "demos"]
    assert sum(s["budget"] for s in plan["stages"]) <= plan["budget"]
    assert all(s["estimated_search_s"] > 0 for s in plan["stages"])


def test_a_stage_that_cannot_keep_an_earlier_stage_part_is_refused_before_any_work(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="demos,ptuning", budget=5000, out=str(tmp_path))
    with pytest.raises(AutopromptError, match=r"stage 2 \(ptuning\) cannot keep the demonstrations stage 1 \(demos\)"):
        run_pipeline(spec, lm=causal, data=task)
    assert not list(tmp_path.rglob("spec.json"))  # nothing was started


def test_crossfit_gates_each_fold_on_the_other_and_reports_their_ensemble(causal, task, tmp_path):
    result = _pipeline(causal, task, tmp_path, params={"crossfit": "true", "min_gain": 0}, budget=3000)
    stages = result.details["stages"]
    assert [(s["fold"], s["strategy"]) for s in stages] == [(k, n) for k in (1, 2)
                                                             for n in ("verbalizer", "demos", "gradient")]
    assert result.selection["n"] == len(task.train) + len(task.dev)  # every labelled example is evidence
    assert result.budget.used <= 3000
    folds = [r for r in result.selection["candidates"]]
    assert [r["fold"] for r in folds] == [1, 2]
    if result.selection["reliable"] and folds[0]["fingerprint"] != folds[1]["fingerprint"]:
        assert "ensemble" in result.prompt


def _balanced_random_labels(data: TaskData, seed: int) -> TaskData:
    rng = random.Random(seed)

    def split(name: str) -> list[Example]:
        examples = data.split(name)
        labels = [i % 2 for i in range(len(examples))]
        rng.shuffle(labels)
        return [Example(dict(e.fields), label) for e, label in zip(examples, labels, strict=True)]

    splits = {s: split(s) for s in ("train", "dev", "test")}
    return TaskData(data.task, data.protocol, {s: (lambda s=s: splits[s]) for s in splits})


@pytest.mark.parametrize("seed", [0, 1])
def test_crossfit_on_random_labels_reports_the_manual_prompt(causal, seed, tmp_path):
    """Labels shuffled over a balanced set carry no information, out of fold either: the manual prompt.

    (With labels drawn independently the labelled set's chance class imbalance is shared by both
    stratified folds, and a prompt that learns it gains out of fold: cross-fitting measures gains on
    data drawn like the labelled set, a limit the README states.)"""
    data = _balanced_random_labels(tiny_task(n=48), seed)
    result = _pipeline(causal, data, tmp_path, params={"crossfit": "true"}, budget=3000)
    assert result.prompt_fingerprint == data.task.default_prompt.fingerprint, result.selection["message"]


def test_cli_pipeline_run_shows_each_stage_with_its_interval(tmp_path, tiny_model_dir):
    toml = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(toml), "--model", str(tiny_model_dir), "--strategy",
                                 "verbalizer,demos", "--param", "verbalizer.k=4", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "1. verbalizer" in result.output and "2. demos" in result.output
    assert "gain over its start" in result.output and "found − manual" in result.output


def test_refit_re_estimates_what_a_prompt_fitted_and_keeps_every_choice(causal, task):
    ev = Evaluator(causal, task.task)
    half, labelled = task.train[: len(task.train) // 2], task.train + task.dev
    manual = task.task.default_prompt
    assert ev.refit(manual, labelled) is manual  # nothing fitted: returned as it is
    fitted = ev.calibrate(ev.fit_rule([manual], "centroid", half), "prior", half)[0]
    refit = ev.refit(fitted, labelled)
    by_hand = ev.calibrate(ev.fit_rule([manual], "centroid", labelled), "prior", labelled)[0]
    assert refit.fingerprint == by_hand.fingerprint != fitted.fingerprint
    assert refit.rule.unfitted() == fitted.rule.unfitted() and refit.calibration.method == "prior"
    assert refit.template == fitted.template and refit.verbalizer == fitted.verbalizer
    direct = ev.calibrate([manual], "prior", half)[0]  # a direct rule: only its prior is estimated again
    joint = ev.refit(Ensemble((fitted, direct), (0.5, 0.5)), labelled)
    assert [m.fingerprint for m in joint.members] == [by_hand.fingerprint,
                                                     ev.calibrate([manual], "prior", labelled)[0].fingerprint]


@pytest.mark.parametrize("crossfit", [False, True])
def test_a_passed_pipeline_prompt_is_refitted_on_what_its_stages_could_see(causal, task, tmp_path, monkeypatch,
                                                                          crossfit):
    seen = []
    real_refit = Evaluator.refit

    def refit(self, prompt, examples):
        seen.append({id(e) for e in examples})
        return real_refit(self, prompt, examples)

    monkeypatch.setattr(Evaluator, "refit", refit)
    params = {"rules": "centroid", "min_gain": 0, "crossfit": str(crossfit).lower()}
    spec = SearchSpec(task="tiny", strategy="rule,demos", params=params, budget=3000, out=str(tmp_path), seed=1)
    result = run_pipeline(spec, lm=causal, data=task)
    assert result.selection["reliable"]  # a centroid rule separates the tiny task's classes
    refit_facts = result.details["refit"]
    could_see = task.train + task.dev if crossfit else task.train  # never dev, where dev is the final gate's
    assert seen == [{id(e) for e in could_see}] and refit_facts["on"] == len(could_see)
    gated = load_prompt(refit_facts["gated_prompt"])
    assert gated.fingerprint == refit_facts["gated_fingerprint"] == result.selection["chosen_fingerprint"]
    reported = load_prompt(Path(result.run_dir) / "prompt.json")
    assert reported.fingerprint == result.prompt_fingerprint == \
        Evaluator(causal, task.task).refit(gated, could_see).fingerprint != gated.fingerprint
    with cli_out.capture() as shown:  # the CLI says what was refitted, on how many, and where the gated prompt is
        show_run(result)
    assert f"refitted after the gate: centroid rule on the {len(could_see)} examples" in shown.get()
    kept = run_pipeline(SearchSpec(task="tiny", strategy="rule,demos", params={**params, "refit": "false"},
                                   budget=3000, out=str(tmp_path / "kept"), seed=1), lm=causal, data=task)
    assert "refit" not in kept.details and kept.prompt_fingerprint == gated.fingerprint
