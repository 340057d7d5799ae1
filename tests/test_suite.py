"""Benchmark suites as one optuna study: every cell exactly once, however many workers, a killed one included."""

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
from autoprompt.errors import AutopromptError
from autoprompt.experiments.suite import load_suite, suite_run
from autoprompt.results import leaderboard as lb
from autoprompt.results.record import RunRecord
from autoprompt.testing.tiny import toy_task_file


def write_suite(tmp_path: Path, model: Path, budget: int = 300, seeds: str = "[13, 21]") -> Path:
    task = toy_task_file(tmp_path)
    path = tmp_path / "suites.toml"
    path.write_text(f'[tiny]\nmodel = "{model}"\ntasks = ["{task}"]\ndata_seeds = {seeds}\nout = "{tmp_path / "out"}"\n'
                    f'[tiny.strategies.manual]\nbudget = 64\n'
                    f'[tiny.strategies.random]\nbudget = {budget}\n'
                    'params = { num_candidates = 2, num_triggers = 3, rescore_examples = 4 }\n')
    return path


def cell_rows(db: str | Path) -> list[dict]:
    return lb.load_rows(db)


def test_a_suite_runs_every_cell_once_and_a_second_run_reruns_nothing(tmp_path, tiny_model_dir):
    suites = write_suite(tmp_path, tiny_model_dir)
    suite = load_suite("tiny", suites)
    assert list(suite.cells()) == [f"{suite.tasks[0]}/{s}/{e}" for s in (13, 21) for e in ("manual", "random")]
    planned = suite_run("tiny", suites=suites, dry_run=True)
    assert set(planned["states"].values()) == {"todo"} and planned["cells"] == 4
    first = suite_run("tiny", suites=suites)
    assert first["done"] == 4 and set(first["states"].values()) == {"done"}
    rows = cell_rows(first["db"])
    assert len(rows) == 4 and {(r["strategy"], r["data_seed"]) for r in rows} == \
        {(s, d) for s in ("manual", "random") for d in (13, 21)}
    again = suite_run("tiny", suites=suites)
    assert again["done"] == 4 and len(cell_rows(again["db"])) == 4
    trials = optuna.load_study(study_name=first["study"], storage=first["storage"]).get_trials()
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4  # the second call started none


def test_cells_an_edited_suite_no_longer_has_do_not_count_as_its_done_cells(tmp_path, tiny_model_dir):
    first = suite_run("tiny", suites=write_suite(tmp_path, tiny_model_dir, seeds="[13]"))
    edited = suite_run("tiny", suites=write_suite(tmp_path, tiny_model_dir, seeds="[21]"))  # same name and leaderboard
    assert edited["db"] == first["db"] and len(lb.recorded_cells("tiny", edited["db"])) == 4
    assert edited["done"] == 2 and set(edited["states"].values()) == {"done"}
    assert all(cell.split("/")[-2] == "21" for cell in edited["states"]) and edited["study"] != first["study"]
    with pytest.raises(AutopromptError, match="another set of cells"):  # a named study keeps its grid
        suite_run("tiny", suites=write_suite(tmp_path, tiny_model_dir, seeds="[13]"), study=edited["study"])


def test_a_cell_handed_out_twice_is_recorded_once(tmp_path, tiny_model_dir):
    suites = write_suite(tmp_path, tiny_model_dir, seeds="[13]")
    first = suite_run("tiny", suites=suites)
    row = cell_rows(first["db"])[0]
    run = RunRecord.from_json(json.loads((Path(row["run_dir"]) / "result.json").read_text()))
    cell = next(iter(lb.recorded_cells("tiny", first["db"])))
    assert lb.record_cell(run, "tiny", cell, "another-worker", first["db"]) is False  # the second insert
    assert len(cell_rows(first["db"])) == 2 and lb.recorded_cells("tiny", first["db"])[cell]["worker"] != \
        "another-worker"
    # a trial that draws a cell already recorded runs nothing: marked surplus, failed, no new row
    study = optuna.load_study(study_name=first["study"], storage=first["storage"])
    study.enqueue_trial({"cell": cell})
    from autoprompt.experiments.suite import SuiteRun, _objective  # noqa: PLC0415

    config = SuiteRun(load_suite("tiny", suites), first["storage"], first["db"], first["study"])
    study.optimize(lambda trial: _objective(config, trial, None, "test"), n_trials=1)
    last = study.get_trials()[-1]
    assert last.state == TrialState.FAIL and last.user_attrs["surplus"] and len(cell_rows(first["db"])) == 2


def test_two_local_workers_share_one_grid(tmp_path, tiny_model_dir):
    """Workers read each other's grid ids as the same cells: no cell is drawn twice while others wait."""
    suites = write_suite(tmp_path, tiny_model_dir)
    result = suite_run("tiny", suites=suites, workers=2)
    assert result["done"] == 4 and sum(result["by_worker"].values()) == 4
    trials = optuna.load_study(study_name=result["study"], storage=result["storage"]).get_trials()
    drawn = [t.params["cell"] for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(drawn) == sorted(load_suite("tiny", suites).cells())


def test_suite_cli_dry_run_and_bad_names(tmp_path, tiny_model_dir):
    suites = write_suite(tmp_path, tiny_model_dir)
    runner = CliRunner()
    listed = runner.invoke(app, ["suite", "run", "tiny", "--suites", str(suites), "--dry-run"])
    assert listed.exit_code == 0 and listed.output.count("todo") >= 4, listed.output
    bad = runner.invoke(app, ["suite", "run", "nope", "--suites", str(suites)])
    assert bad.exit_code == 2 and "no suite 'nope'" in bad.output and "tiny" in bad.output
    missing = runner.invoke(app, ["suite", "run", "quick", "--suites", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def storages() -> list:
    url = os.environ.get("AUTOPROMPT_TEST_POSTGRES_URL")
    return ["sqlite", pytest.param(url or "", marks=[pytest.mark.postgres, pytest.mark.skipif(
        not url, reason="no PostgreSQL server: .ci/run starts one and sets AUTOPROMPT_TEST_POSTGRES_URL")])]


@pytest.mark.parametrize("storage", storages(), ids=["sqlite", "postgresql"])
def test_two_workers_and_a_killed_one_do_every_cell_exactly_once(storage, tmp_path, tiny_model_dir, holding):
    suites = write_suite(tmp_path, tiny_model_dir)
    suites.write_text(suites.read_text().split("[tiny.strategies.random]")[0] + "[tiny.strategies.hold]\n")
    study = f"suite-tiny-{os.getpid()}-{int(time.time())}"
    url = storage if storage != "sqlite" else f"sqlite:///{tmp_path / 'study.db'}"
    args = ["suite", "run", "tiny", "--suites", str(suites), "--storage", url, "--db", url, "--study", study,
            "--heartbeat", "1", "--grace", "3"]
    command = [sys.executable, "-c", "from autoprompt.cli import main; main()", *args]
    log = tmp_path / "survivor.log"  # what the survivor printed, shown if it fails
    with log.open("w") as stderr:
        victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=holding.env)
        survivor = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=holding.env)
    deadline = time.time() + 180
    while time.time() < deadline and survivor.poll() is None:  # until both wait inside a `hold` cell's search
        try:
            running = optuna.load_study(study_name=study, storage=url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            running = []
        held = {t.params["cell"] for t in running if t.params.get("cell", "").endswith("/hold")}
        if len(held) >= 2:
            break
        time.sleep(0.2)
    else:
        victim.kill()
        survivor.kill()
        pytest.fail(f"the two workers were never inside a cell at once; the survivor said:\n{log.read_text()[-3000:]}")
    os.kill(victim.pid, signal.SIGKILL)
    holding.release()
    try:
        assert survivor.wait(timeout=600) == 0, log.read_text()[-3000:]
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail("the surviving worker did not finish the suite")
    suite = load_suite("tiny", suites)
    assert set(suite.cells()) <= set(lb.recorded_cells("tiny", url))  # none lost (a server keeps other runs' cells)
    rows = [r for r in lb.load_rows(url) if str(r["run_dir"]).startswith(str(tmp_path))]  # a server keeps others
    assert len(rows) == len(suite.cells()) == len({r["run_key"] for r in rows})  # none twice
    trials = optuna.load_study(study_name=study, storage=url).get_trials()
    killed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert len(killed) == 1 and killed[0].params["cell"] in held
    retried = [t for t in trials if "failed_trial" in t.system_attrs]
    assert any(t.params["cell"] == trials[t.system_attrs["failed_trial"]].params["cell"] for t in retried)


def test_a_suite_sets_what_its_cells_compute_in(tmp_path, tiny_model_dir):
    path = write_suite(tmp_path, tiny_model_dir)
    text = path.read_text().replace('out = "', 'dtype = "bf16"\nout = "', 1)
    path.write_text(text.replace("[tiny.strategies.manual]\nbudget = 64\n",
                                 '[tiny.strategies.manual]\nbudget = 64\ndtype = "fp32"\n'))
    cells = load_suite("tiny", path).cells()
    assert {name.rsplit("/", 1)[1]: spec.dtype for name, spec in cells.items()} == {"manual": "fp32", "random": "bf16"}
    path.write_text(text.replace('dtype = "bf16"', 'dtype = "fp8"'))
    with pytest.raises(AutopromptError, match=r"^suite 'tiny' in .*entry 'manual': unknown `dtype` 'fp8'"):
        load_suite("tiny", path)
