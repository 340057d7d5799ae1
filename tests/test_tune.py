"""Tuning with optuna: several workers on one study, a killed worker, PostgreSQL storage, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from autoprompt.cli import app
from autoprompt.experiments.tune import TuneConfig, grid, load_space, storage_url, tune
from autoprompt.results import leaderboard as lb
from autoprompt.testing.tiny import toy_task_file

SPACE = {"num_candidates": {"type": "int", "low": 2, "high": 6}, "num_triggers": {"type": "int", "low": 1, "high": 4}}


def config(tmp_path, model_dir, storage=None, n_trials=6, budget=120, db="lb.db", **kw) -> TuneConfig:
    return TuneConfig(task=str(toy_task_file(tmp_path)), strategy="random", n_trials=n_trials, space=SPACE,
                      storage=storage or storage_url(None, tmp_path / "runs"), study="toy-random",
                      out=str(tmp_path / "runs"), model=str(model_dir), budget=budget,
                      db=str(tmp_path / db) if db else None, **kw)


def check_study(cfg: TuneConfig, n: int) -> list:
    study = optuna.load_study(study_name=cfg.study, storage=cfg.storage)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n, [(t.number, t.state) for t in trials]
    assert len({t.number for t in finished}) == n
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    rows = lb.load_rows(cfg.leaderboard)
    complete = [t for t in finished if t.state == TrialState.COMPLETE]
    # every finished trial's run is a leaderboard row (pruned trials stopped before a result)
    assert {r["run_dir"] for r in rows} >= {run for t in complete for run in t.user_attrs["runs"]}
    for t in complete:
        assert t.value == pytest.approx(sum(t.user_attrs["dev_per_seed"]) / len(t.user_attrs["dev_per_seed"]))
    return trials


def test_two_workers_share_one_sqlite_study(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("AUTOPROMPT_DB", raising=False)
    cfg = config(tmp_path, tiny_model_dir, heartbeat=2, grace=6, db=None)  # every trial in <out>/leaderboard.db
    result = tune(cfg, workers=2)
    check_study(cfg, 6)
    best = result["best"]
    assert best["command"].startswith("autoprompt search --task") and "--param num_candidates=" in best["command"]
    assert best["test_per_seed"] and best["dev"] == max(t.value for t in optuna.load_study(
        study_name=cfg.study, storage=cfg.storage).get_trials() if t.state == TrialState.COMPLETE)


def test_a_killed_worker_leaves_the_study_consistent(tmp_path, tiny_model_dir, holding):
    cfg = config(tmp_path, tiny_model_dir, n_trials=3, heartbeat=1, grace=3)
    space = tmp_path / "hold.toml"  # two parameters: a worker killed mid-draw has drawn fewer
    space.write_text('[rounds]\ntype = "int"\nlow = 1\nhigh = 3\n\n[min_gain]\ntype = "float"\nlow = 0\nhigh = 2\n')
    args = ["tune", "--task", cfg.task, "--strategy", "hold", "--n-trials", "3", "--model", cfg.model,
            "--budget", "500", "--out", cfg.out, "--study", cfg.study, "--heartbeat", "1", "--grace", "3",
            "--db", cfg.db, "--space", str(space)]
    command = [sys.executable, "-c", "from autoprompt.cli import main; main()", *args]
    victim, survivor = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         env=holding.env) for _ in range(2))
    deadline = time.time() + 120
    while time.time() < deadline and survivor.poll() is None:  # until both workers wait inside a search
        try:
            running = optuna.load_study(study_name=cfg.study, storage=cfg.storage).get_trials(
                states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        if len([t for t in running if len(t.params) == 2]) >= 2:
            break
        time.sleep(0.2)
    else:
        victim.kill()
        survivor.kill()
        pytest.fail("the two workers were never searching at once")
    os.kill(victim.pid, signal.SIGKILL)
    holding.release()
    try:
        assert survivor.wait(timeout=600) == 0
    except subprocess.TimeoutExpired:
        survivor.kill()
        trials = optuna.load_study(study_name=cfg.study, storage=cfg.storage).get_trials()
        pytest.fail(f"the surviving worker did not finish: {[(t.number, t.state.name, t.user_attrs) for t in trials]}")
    trials = check_study(cfg, 3)
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert failed, "the killed worker's trial should be marked failed"
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    # the retry keeps every parameter the dead trial had drawn (killed mid-draw, it had fewer: the rest are new)
    assert retried and all(trials[t.system_attrs["failed_trial"]].params.items() <= t.params.items()
                           for t in retried)
    assert any(t.params == trials[t.system_attrs["failed_trial"]].params for t in retried)


def write_space(tmp_path: Path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text('[num_candidates]\ntype = "int"\nlow = 2\nhigh = 6\n\n[num_triggers]\ntype = "int"\nlow = 1\n'
                    'high = 4\n')
    return path


def test_a_trial_orphaned_before_its_first_heartbeat_is_failed_and_retried(tmp_path, tiny_model_dir):
    from autoprompt.experiments.tune import open_study  # noqa: PLC0415
    from autoprompt.experiments.workers import fail_orphans  # noqa: PLC0415

    cfg = config(tmp_path, tiny_model_dir, n_trials=2, grace=1)
    study = open_study(cfg)
    orphan = study.ask({"num_candidates": optuna.distributions.IntDistribution(2, 6),
                        "num_triggers": optuna.distributions.IntDistribution(1, 4)})  # then its worker "dies"
    assert fail_orphans(study, grace=600) == []  # younger than the grace period: too young to tell
    time.sleep(0.05)
    assert fail_orphans(study, grace=0) == [orphan.number]
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL
    assert [t.state for t in trials[orphan.number + 1:]] == [TrialState.WAITING]  # the retry, same params
    tune(cfg)
    check_study(cfg, 2)


def test_a_worker_whose_trial_another_took_for_dead_carries_on_and_an_objective_error_still_raises(tmp_path, caplog):
    from autoprompt.experiments.workers import run_one_trial  # noqa: PLC0415

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")

    def failed_by_another_worker(trial: optuna.Trial) -> float:
        other = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{tmp_path / 'study.db'}")
        other.tell(trial.number, state=TrialState.FAIL)  # what `fail_stale_trials` does to a silent worker
        return 1.0

    def failed_then_stopped(trial: optuna.Trial) -> float:
        failed_by_another_worker(trial)
        trial.set_user_attr("step", 1)  # the objective's next write to its trial: refused
        return 1.0

    for objective in (failed_by_another_worker, failed_then_stopped):
        caplog.clear()
        assert run_one_trial(study, objective).state == TrialState.FAIL
        assert "failed by another worker" in caplog.text

    def broken(trial: optuna.Trial) -> float:
        raise ValueError("the objective's own bug")

    with pytest.raises(ValueError, match="own bug"):
        run_one_trial(study, broken)
    assert run_one_trial(study, lambda trial: 2.0).value == 2.0  # its own trial, with its value


def test_space_files_and_grids(tmp_path):
    space = load_space(write_space(tmp_path), "random")
    assert space["num_triggers"] == {"type": "int", "low": 1, "high": 4}
    assert grid({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}})["lr"] == pytest.approx(
        [1e-4, 1e-3, 1e-2])
    assert grid(SPACE)["num_triggers"] == [1, 2, 4]  # 1, 2.5, 4 rounded half to even
    assert grid({"k": {"type": "int", "low": 2, "high": 6}}, points=5)["k"] == [2, 3, 4, 5, 6]
    bad = tmp_path / "bad.toml"
    bad.write_text('[nope]\ntype = "int"\nlow = 1\nhigh = 2\n')
    runner = CliRunner()
    result = runner.invoke(app, ["tune", "--task", "sst2", "--strategy", "random", "--space", str(bad)])
    assert result.exit_code == 2 and "random has no parameter 'nope'" in result.output
    result = runner.invoke(app, ["tune", "--task", "sst2", "--strategy", "manual"])
    assert result.exit_code == 2 and "no default search space" in result.output
    result = runner.invoke(app, ["tune", "--task", "sst2", "--data-seeds", "a,b"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output


def test_report_has_a_tuning_section(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, n_trials=3)
    tune(cfg)
    result = CliRunner().invoke(app, ["report", "--db", cfg.db, "--out", str(tmp_path / "report"), "--study",
                                      cfg.study, "--storage", cfg.storage])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Tuning: toy-random" in page and "Best trial #" in page
    assert any(p.name.startswith("tune-history") for p in (tmp_path / "report").iterdir())


@pytest.mark.postgres
def test_two_workers_on_postgresql(tmp_path, tiny_model_dir):
    url = os.environ.get("AUTOPROMPT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: .ci/run starts one on 127.0.0.1 and sets AUTOPROMPT_TEST_POSTGRES_URL")
    cfg = config(tmp_path, tiny_model_dir, storage=url, n_trials=4, heartbeat=2, grace=6)
    cfg.study = f"toy-random-{os.getpid()}-{int(time.time())}"
    cfg.db = url  # the leaderboard in the same server, as a team would share it
    tune(cfg, workers=2)
    check_study(cfg, 4)
    assert json.loads(lb.load_rows(url, task="toy")[0]["versions"])


def test_trials_search_in_the_dtype_asked_and_the_command_says_so(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.delenv("AUTOPROMPT_DB", raising=False)
    cfg = config(tmp_path, tiny_model_dir, n_trials=1, db=None, dtype="bf16")
    result = tune(cfg, workers=1)
    assert "--dtype bf16" in result["best"]["command"]
    run_dir = Path(result["best"]["runs"][0])
    assert json.loads((run_dir / "result.json").read_text())["search_dtype"] == "bf16"
    bad = CliRunner().invoke(app, ["tune", "--task", cfg.task, "--strategy", "random", "--dtype", "fp8"])
    assert bad.exit_code == 2 and "unknown --dtype 'fp8'" in bad.output
