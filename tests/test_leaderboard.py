"""Leaderboard: rows, fair aggregates, concurrent writers, import, CLI; the report and its rendering."""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoprompt.cli import app
from autoprompt.results import leaderboard as lb
from autoprompt.results import tables
from autoprompt.results.recording import record_finished
from autoprompt.results.report import write as write_report
from autoprompt.search import SearchSpec, run_search


def fake_result(tmp: Path, n: int, task="sst2", strategy="gradient", test=0.7, base=0.6, seed=13, shots=16,
                test_n=872, params=None) -> dict:
    run_dir = tmp / "runs" / task / strategy / f"run-{n}"
    return {"task": task, "strategy": strategy, "model": "smollm2-135m", "seed": 0, "shots": shots,
            "data_seed": seed, "params": params or {}, "metric": "accuracy", "prompt": {},
            "prompt_fingerprint": f"fp{n}", "prompt_text": "{sentence} It was [P]", "triggers": [],
            "scores": {"dev": test + 0.05, "test": test}, "baseline": {"dev": base, "test": base},
            "budget": {"forwards": 100 * n, "backwards": 0, "used": 100 * n, "limit": 6000}, "steps": 3,
            "details": {}, "wall_s": 10.0 * n, "split_sizes": {"train": 32, "dev": 32, "test": test_n},
            "versions": {"torch": "2.13.0", "git": "abc"}, "run_dir": str(run_dir), "finished_at": "2026-11-27"}


def test_aggregate_equals_a_hand_computation(tmp_path):
    db = tmp_path / "lb.db"
    grad = [(0.70, 0.60, 13), (0.74, 0.62, 21), (0.66, 0.61, 42)]
    for n, (test, base, seed) in enumerate(grad):
        assert lb.record(fake_result(tmp_path, n, test=test, base=base, seed=seed), db)
    lb.record(fake_result(tmp_path, 10, strategy="ptuning", test=0.80, base=0.60, params={"mode": "prefix"}), db)
    lb.record(fake_result(tmp_path, 11, test=0.99, test_n=200), db)          # another test set: its own row
    assert not lb.record(fake_result(tmp_path, 0, test=0.1), db)             # same run folder: not again
    rows = tables.aggregate(lb.load_rows(db))
    assert [(r["strategy"], r["protocol"], r["n"]) for r in rows] == [
        ("gradient", "16-shot, test n=200", 1),
        ("ptuning[mode=prefix]", "16-shot, test n=872", 1),
        ("gradient", "16-shot, test n=872", 3)]
    g = rows[2]
    assert g["test_mean"] == pytest.approx((0.70 + 0.74 + 0.66) / 3)
    assert g["test_std"] == pytest.approx(statistics.stdev([0.70, 0.74, 0.66]))
    assert g["test_std"] == pytest.approx(0.04)                                # sample std by hand
    assert g["gain_mean"] == pytest.approx(((0.70 - 0.60) + (0.74 - 0.62) + (0.66 - 0.61)) / 3)
    assert g["budget_median"] == 100 and g["wall_s_median"] == 10.0 and g["seeds"] == [13, 21, 42]
    md = tables.to_markdown(rows)
    assert "| sst2 | smollm2-135m | 16-shot, test n=872 | gradient | 3 | 0.7000 ± 0.0400 | +0.0900 |" in md
    assert tables.to_csv(rows).splitlines()[0].startswith("task,model,protocol,strategy")



def test_a_database_from_before_a_column_existed_keeps_its_runs_and_gains_the_column(tmp_path):
    db = tmp_path / "old.db"
    old = [c for c in lb.runs.columns if c.name != "tokens"]   # the table as it was before `tokens`
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE runs (" + ", ".join(
            f"{c.name} {'INTEGER PRIMARY KEY AUTOINCREMENT' if c.name == 'id' else c.type}"
            + (" UNIQUE" if c.name == "run_key" else "") for c in old) + ")")
        conn.execute("INSERT INTO runs (run_key, task, protocol, model, strategy, variant, dev, test, baseline_dev, "
                     "baseline_test, budget_used, wall_s, data_seed) VALUES ('sst2/gradient/old', 'sst2', "
                     "'16-shot, test n=872', 'smollm2-135m', 'gradient', 'gradient', 0.8, 0.7, 0.6, 0.6, 50, 1.0, 13)")
    lb._ENGINES.clear()
    result = fake_result(tmp_path, 1, seed=21)
    result["budget"]["tokens"] = 12_345
    assert lb.record(result, db)
    rows = lb.load_rows(db)
    assert [(r["run_key"], r["tokens"]) for r in rows] == [("sst2/gradient/old", None),
                                                           ("sst2/gradient/run-1", 12_345)]
    (row,) = tables.aggregate(rows)
    assert row["n"] == 2 and row["tokens_median"] == 12_345   # the old run's count is unknown, not 0
    assert "| 12k |" in tables.to_markdown([row])


def test_a_run_recorded_twice_counts_once(tmp_path):
    db = tmp_path / "lb.db"
    first = fake_result(tmp_path, 1, test=0.70)
    copied = {**fake_result(tmp_path, 2, test=0.70), "prompt_fingerprint": first["prompt_fingerprint"]}
    other_seed = {**copied, "run_dir": str(tmp_path / "elsewhere"), "data_seed": 21, "scores": {"dev": 0.8,
                                                                                                "test": 0.8}}
    for result in (first, copied, other_seed):  # a copied run folder has another key, the same run
        assert lb.record(result, db)
    (row,) = tables.aggregate(lb.load_rows(db))
    assert row["n"] == 2 and row["test_mean"] == pytest.approx(0.75)


def test_the_leaderboard_reads_in_80_columns(tmp_path):
    db = str(tmp_path / "lb.db")
    lb.record(fake_result(tmp_path, 1, params={"calibration": "prior", "fluency": 0.1}), db)
    shown = CliRunner().invoke(app, ["leaderboard", "--db", db], env={"COLUMNS": "80"})
    assert shown.exit_code == 0 and "0.7000 ± 0.0000" in shown.output and "16-shot, test n=872" in shown.output
    assert max(len(line) for line in shown.output.splitlines()) <= 80


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from pathlib import Path
    from test_leaderboard import fake_result
    from autoprompt.results import leaderboard as lb
    tmp, offset = Path(sys.argv[1]), int(sys.argv[2])
    for n in range(offset, offset + 50):
        assert lb.record(fake_result(tmp, n, test=0.5 + n / 1000), tmp / "shared.db")
""")


def test_two_processes_recording_at_once_lose_nothing(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(tests=str(Path(__file__).parent)))
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(k * 50)]) for k in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    rows = lb.load_rows(tmp_path / "shared.db")
    assert len(rows) == 100 and len({r["run_key"] for r in rows}) == 100


def test_runs_are_recorded_and_import_rebuilds(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="random", params={"num_candidates": 2}, budget=100, out=str(tmp_path))
    result = run_search(spec, lm=causal, data=task)
    assert not (tmp_path / "leaderboard.db").exists()  # the search core records nothing: its callers do
    assert record_finished(result, None, tmp_path) == result
    (row,) = lb.load_rows(tmp_path / "leaderboard.db")
    assert row["test"] == result.scores.test and row["baseline_test"] == result.baseline.test
    assert row["prompt_fingerprint"] == result.prompt_fingerprint and row["git_rev"] == result.versions["git"]
    assert json.loads(row["versions"])["torch"] and row["budget_used"] == result.budget.used
    fresh = tmp_path / "rebuilt.db"
    assert lb.import_runs(tmp_path, fresh) == (1, 0)
    assert lb.import_runs(tmp_path, fresh) == (0, 1)


def test_cli_leaderboard_and_report(tmp_path):
    db = str(tmp_path / "lb.db")
    for n, (strategy, test) in enumerate([("gradient", 0.7), ("gradient", 0.72), ("manual", 0.6)]):
        lb.record(fake_result(tmp_path, n, strategy=strategy, test=test), db)
    runner = CliRunner()
    shown = runner.invoke(app, ["leaderboard", "--db", db, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert [r["strategy"] for r in json.loads(shown.output)] == ["gradient", "manual"]
    assert "gradient" in runner.invoke(app, ["leaderboard", "--db", db], env={"COLUMNS": "200"}).output
    empty = runner.invoke(app, ["leaderboard", "--db", str(tmp_path / "none.db"), "--task", "rte"])
    assert empty.exit_code == 2 and "no runs recorded" in empty.output
    bad = runner.invoke(app, ["leaderboard", "--db", db, "--format", "xml"])
    assert bad.exit_code == 2 and "--format" in bad.output
    imported = runner.invoke(app, ["leaderboard", "import", str(tmp_path / "nowhere"), "--db", db])
    assert imported.exit_code == 2 and "does not exist" in imported.output
    made = runner.invoke(app, ["report", "--db", db, "--out", str(tmp_path / "report")])
    assert made.exit_code == 0, made.output
    assert (tmp_path / "report" / "report.html").is_file()


def make_report(tmp_path: Path) -> Path:
    db = tmp_path / "lb.db"
    for n, (strategy, test, seed) in enumerate([("gradient", 0.70, 13), ("gradient", 0.74, 21),
                                                ("paraphrase", 0.76, 13), ("paraphrase", 0.78, 21)]):
        result = fake_result(tmp_path, n, strategy=strategy, test=test, seed=seed)
        Path(result["run_dir"]).mkdir(parents=True)
        trace = [{"step": k, "best_dev": 0.6 + 0.05 * k, "budget": 100 * k} for k in range(1, 4)]
        (Path(result["run_dir"]) / "trace.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trace))
        lb.record(result, db)
    moved = fake_result(tmp_path, 9, strategy="gradient", test=0.55, base=0.58, seed=13)
    moved.update(model="gemma3-270m", source_model="smollm2-135m", variant="gradient (from smollm2-135m)")
    lb.record(moved, db)  # a smollm2 prompt scored on gemma: 0.03 below gemma's manual prompt
    write_report(tmp_path / "report", db)
    return tmp_path / "report"


def test_report_has_tables_images_and_anchors(tmp_path):
    folder = make_report(tmp_path)
    page = (folder / "report.html").read_text()
    assert page.count("<table>") >= 3  # leaderboard, best prompts, anchors
    # smollm2: bar chart, budget curves, dev-vs-test picture; gemma: bar chart; the transfer matrix
    assert page.count('src="data:image/png;base64,') == 5
    assert "Published anchor numbers" in page and "91.4" in page
    md = (folder / "report.md").read_text()
    images = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert len(images) == 5 and all((folder / name).stat().st_size > 1000 for name in images)
    assert sum(name.startswith("overfit-") for name in images) == 1  # transferred runs are not in it
    # the matrix: gradient found on smollm2 gains +0.12 on average there (runs 0.70/0.74 vs 0.60), -0.03 on gemma
    assert "| smollm2-135m · gradient | –  | +0.1200 (n=2) |".replace("–  ", "-0.0300 (n=1) ") in md
    assert "gradient (from smollm2-135m)" in md  # its leaderboard row says where the prompt was found


@pytest.mark.browser
def test_report_renders_in_headless_chromium(tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    folder = make_report(tmp_path)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,1600", (folder / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread  # noqa: PLC0415

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] > 500 and pixels.std() > 0.05  # not a blank page
    assert (pixels.min(axis=-1) < 0.3).mean() > 0.001  # dark text on it, not a uniform light page
    assert len({tuple(px) for px in (pixels.reshape(-1, 3)[::97] * 8).astype(int)}) > 3  # plots add colours
