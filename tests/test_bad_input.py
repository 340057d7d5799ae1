"""The bad-input battery: every case gets exit code 2, one ``error:`` line, no traceback, and leaves
no file half-written or created where none should be.

Cases are grouped by cause, as the issue that asked for them counted them. Each case builds its own
inputs in a fresh folder; ``{model}``, ``{task}``, ``{prompt}``, ``{run}``, ``{tmp}`` and ``{data}``
in the arguments are filled in from the fixtures.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoprompt.cli import app
from autoprompt.testing.tiny import toy_task_file

runner = CliRunner()
READ_ONLY = "/proc/autoprompt-read-only"  # writes fail there even for root (CI runs as root)
GOOD_PROMPT = {"template": "{text} It was [P]", "verbalizer": {"0": ["bad"], "1": ["good"]}}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _prompt(tmp: Path, **changes) -> Path:
    return _write(tmp / "bad-prompt" / "prompt.json", json.dumps({**GOOD_PROMPT, **changes}))


def _toml(tmp: Path, body: str) -> Path:
    _write(tmp / "t" / "test.csv", "text,label\nthe film was good,1\nthe film was bad,0\n")
    return _write(tmp / "t" / "task.toml", body)


TOML_OK = ('fields = ["text"]\nlabel_column = "label"\nlabels = ["0", "1"]\ntemplate = "{text} It was [P]"\n'
           '[files]\ntest = "test.csv"\n[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')


def _run_folder(tmp: Path, spec: dict | str, checkpoint: str | None = None) -> Path:
    folder = tmp / "runs" / "toy" / "gradient" / "r1"
    _write(folder / "spec.json", spec if isinstance(spec, str) else json.dumps(spec))
    if checkpoint is not None:
        _write(folder / "checkpoint.json", checkpoint)
    return folder


def _corrupt_db(tmp: Path) -> Path:
    return _write(tmp / "corrupt.db", os.urandom(4096))


# (cause, id, setup(tmp, task, model) -> extra format values, argv, fragment of the one error line)
CASES = [
    # 1. budgets below the start-up cost
    ("budget", "zero", None, "search --task {task} --model {model} --out {tmp}/r --budget 0", "minimum"),
    ("budget", "negative", None, "search --task {task} --model {model} --out {tmp}/r --budget -5", "minimum"),
    ("budget", "tiny", None, "search --task {task} --model {model} --out {tmp}/r --budget 10", "minimum"),
    ("budget", "random-32", None, "search --task {task} --model {model} --out {tmp}/r --strategy random --budget 32",
     "minimum"),
    ("budget", "dry-run-negative", None, "search --task {task} --model {model} --dry-run --budget -5", "minimum"),
    ("budget", "max-seconds", None, "search --task {task} --model {model} --out {tmp}/r --max-seconds -1",
     "--max-seconds"),
    ("budget", "test-limit", None, "search --task {task} --model {model} --out {tmp}/r --test-limit 0",
     "--test-limit"),
    # 2. output paths, checked before the model loads
    ("output", "out-is-file", lambda t: {"f": _write(t / "afile", "x")},
     "search --task {task} --model {model} --out {f}", "is a file"),
    ("output", "out-under-file", lambda t: {"f": _write(t / "afile", "x")},
     "search --task {task} --model {model} --out {f}/runs", "is a file"),
    ("output", "out-read-only", None, "search --task {task} --model {model} --out " + READ_ONLY, "cannot write"),
    ("output", "predict-output-dir", lambda t: {"i": _write(t / "in.jsonl", '{"text": "good"}\n'),
                                                "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model} --output {tmp}", "is a folder"),
    ("output", "predict-output-read-only", lambda t: {"i": _write(t / "in.jsonl", '{"text": "good"}\n'),
                                                      "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model} --output " + READ_ONLY + "/out.jsonl", "cannot write"),
    ("output", "report-out-read-only", None, "report --db {tmp}/lb.db --out " + READ_ONLY, "cannot write"),
    ("output", "tune-out-is-file", lambda t: {"f": _write(t / "afile", "x")},
     "tune --task {task} --model {model} --out {f} --n-trials 1", "is a file"),
    # 3. a corrupt or unusable leaderboard database
    ("database", "leaderboard-corrupt", lambda t: {"db": _corrupt_db(t)}, "leaderboard --db {db}", "{db}"),
    ("database", "report-corrupt", lambda t: {"db": _corrupt_db(t)}, "report --db {db} --out {tmp}/rep",
     "leaderboard database"),
    ("database", "import-corrupt", lambda t: {"db": _corrupt_db(t)}, "leaderboard import {tmp} --db {db}",
     "leaderboard database"),
    ("database", "bad-url", None, "leaderboard --db nosuchdialect://x/y", "leaderboard database"),
    ("database", "db-is-folder", None, "leaderboard --db {tmp}", "leaderboard database"),
    # 4. values of the wrong type in files
    ("types", "prompt-template-int", lambda t: {"p": _prompt(t, template=123)},
     "evaluate --task {task} --model {model} --prompt {p}", "template"),
    ("types", "prompt-verbalizer-list", lambda t: {"p": _prompt(t, verbalizer=["bad", "good"])},
     "evaluate --task {task} --model {model} --prompt {p}", "verbalizer"),
    ("types", "prompt-trigger-strings", lambda t: {"p": _prompt(t, template="{text} [T] It was [P]",
                                                                trigger_ids=["a"])},
     "evaluate --task {task} --model {model} --prompt {p}", "trigger_ids"),
    ("types", "prompt-trigger-oov", lambda t: {"p": _prompt(t, template="{text} [T] It was [P]",
                                                            trigger_ids=[10**9])},
     "evaluate --task {task} --model {model} --prompt {p}", "vocabulary"),
    ("types", "prompt-trigger-count", lambda t: {"p": _prompt(t, template="{text} [T] [T] It was [P]",
                                                              trigger_ids=[5])},
     "evaluate --task {task} --model {model} --prompt {p}", "trigger"),
    ("types", "prompt-not-object", lambda t: {"p": _write(t / "p.json", "[1, 2]")},
     "evaluate --task {task} --model {model} --prompt {p}", "JSON object"),
    ("types", "prompt-calibration-type", lambda t: {"p": _prompt(t, calibration=5)},
     "evaluate --task {task} --model {model} --prompt {p}", "calibration"),
    ("types", "prompt-ensemble-weights", lambda t: {"p": _write(t / "e.json", json.dumps(
        {"ensemble": [GOOD_PROMPT], "weights": ["x"]}))},
     "evaluate --task {task} --model {model} --prompt {p}", "weights"),
    ("types", "toml-files-string", lambda t: {"s": _toml(t, TOML_OK.replace('[files]\ntest = "test.csv"\n', "")
                                                        .replace("fields", 'files = "x.csv"\nfields'))},
     "evaluate --task {s} --model {model}", "files"),
    ("types", "toml-fields-int", lambda t: {"s": _toml(t, TOML_OK.replace('fields = ["text"]', "fields = 5"))},
     "evaluate --task {s} --model {model}", "fields"),
    ("types", "toml-labels-string", lambda t: {"s": _toml(t, TOML_OK.replace('labels = ["0", "1"]', 'labels = "01"'))},
     "evaluate --task {s} --model {model}", "labels"),
    ("types", "toml-unknown-key", lambda t: {"s": _toml(t, 'lables = ["0"]\n' + TOML_OK)},
     "evaluate --task {s} --model {model}", "lables"),
    ("types", "toml-missing-file", lambda t: {"s": _toml(t, TOML_OK.replace("test.csv", "nope.csv"))},
     "evaluate --task {s} --model {model}", "nope.csv"),
    ("types", "spec-budget-string", lambda t: {"r": _run_folder(t, {"task": "x", "strategy": "gradient",
                                                                     "budget": "lots"})},
     "search --resume {r}", "budget"),
    ("types", "spec-params-list", lambda t: {"r": _run_folder(t, {"task": "x", "strategy": "gradient",
                                                                   "params": [1]})},
     "search --resume {r}", "params"),
    ("types", "spec-not-json", lambda t: {"r": _run_folder(t, "{nope")}, "search --resume {r}", "spec.json"),
    ("types", "checkpoint-empty-state", lambda t: {"r": _run_folder(
        t, {"task": str(t / "toy.toml"), "strategy": "gradient", "model": str(t / "model"), "budget": 300},
        json.dumps({"step": 1, "state": {}}))},
     "search --resume {r}", "checkpoint"),
    ("types", "checkpoint-wrong-type", lambda t: {"r": _run_folder(
        t, {"task": str(t / "toy.toml"), "strategy": "gradient", "model": str(t / "model"), "budget": 300},
        json.dumps({"step": "one", "state": []}))},
     "search --resume {r}", "checkpoint"),
    ("types", "param-bool", None, "search --task {task} --model {model} --out {tmp}/r --param gate=maybe",
     "gate"),
    ("types", "param-objective", None, "search --task {task} --model {model} --out {tmp}/r --param objective=f1",
     "objective"),
    ("types", "param-calibration", None, "search --task {task} --model {model} --out {tmp}/r --param calibration=x",
     "calibration"),
    ("types", "param-negative", None, "search --task {task} --model {model} --out {tmp}/r --param num_candidates=-2",
     "num_candidates"),
    # 5. predict inputs
    ("inputs", "predict-not-utf8", lambda t: {"i": _write(t / "in.jsonl", b'{"text": "caf\xe9"}\n'), "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model}", "UTF-8"),
    ("inputs", "predict-missing-field", lambda t: {"i": _write(t / "in.jsonl", '{"body": "good"}\n'), "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model}", "text"),
    ("inputs", "predict-not-json", lambda t: {"i": _write(t / "in.jsonl", "good film\n"), "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model}", "line 1"),
    ("inputs", "predict-empty", lambda t: {"i": _write(t / "in.jsonl", "\n"), "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model}", "no inputs"),
    ("inputs", "predict-missing-input", lambda t: {"p": _prompt(t)},
     "predict --prompt {p} --input {tmp}/none.jsonl --model {model}", "none.jsonl"),
    # 6. models
    ("model", "empty-folder", lambda t: {"m": _write(t / "empty" / ".keep", "").parent},
     "evaluate --task {task} --model {m}", "cannot load model"),
    ("model", "not-a-model", lambda t: {"m": _write(t / "junk" / "config.json", "{}").parent},
     "evaluate --task {task} --model {m}", "cannot load model"),
    # 7. accepted silently before
    ("silent", "batch-size-zero", None, "evaluate --task {task} --model {model} --batch-size 0", "--batch-size"),
    ("silent", "batch-size-negative", None, "evaluate --task {task} --model {model} --batch-size -3", "--batch-size"),
    ("silent", "predict-batch-size", lambda t: {"i": _write(t / "in.jsonl", '{"text": "good"}\n'), "p": _prompt(t)},
     "predict --prompt {p} --input {i} --model {model} --batch-size 0", "--batch-size"),
    ("silent", "template-without-input", None, "evaluate --task {task} --model {model} --template 'It was [P]'",
     "no input field"),
    ("silent", "resume-with-budget", lambda t: {"r": _run_folder(t, {"task": "x", "strategy": "gradient"})},
     "search --resume {r} --budget 500", "--budget"),
    ("silent", "resume-with-strategy", lambda t: {"r": _run_folder(t, {"task": "x", "strategy": "gradient"})},
     "search --resume {r} --strategy random", "--strategy"),
    ("silent", "limit-negative", None, "evaluate --task {task} --model {model} --limit -1", "--limit"),
    ("silent", "shots-zero", None, "evaluate --task {task} --model {model} --shots 0", "shots"),
    ("silent", "shots-more-than-train", None, "search --task {task} --model {model} --out {tmp}/r --shots 50",
     "shots"),
    ("silent", "unknown-calibration", None, "evaluate --task {task} --model {model} --calibration platt",
     "calibration"),
]


@pytest.mark.parametrize(("cause", "name", "setup", "argv", "fragment"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input_battery(cause, name, setup, argv, fragment, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    task = toy_task_file(tmp_path)
    values = {"task": task, "model": tiny_model_dir, "tmp": tmp_path, "data": tmp_path}
    if name.startswith("checkpoint"):
        (tmp_path / "model").symlink_to(tiny_model_dir)
    values.update(setup(tmp_path) if setup else {})
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    import shlex  # noqa: PLC0415

    result = runner.invoke(app, [a.format(**values) for a in shlex.split(argv)])
    assert result.exit_code == 2, f"{cause}/{name}: exit {result.exit_code}\n{result.output}"
    text = result.output.strip()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), text
    assert fragment.format(**values) in lines[0], lines[0]
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, f"files created or changed: {sorted(set(after.items()) ^ set(before.items()))}"


def test_a_corrupt_leaderboard_does_not_fail_a_finished_search(tmp_path, tiny_model_dir):
    task = toy_task_file(tmp_path)
    db = _corrupt_db(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(task), "--model", str(tiny_model_dir), "--strategy", "manual",
                                 "--out", str(tmp_path / "runs"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    assert "not recorded in the leaderboard" in result.output and "leaderboard import" in result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert Path(out["run_dir"], "result.json").is_file()
    with pytest.raises(sqlite3.DatabaseError):  # the file was left as it was, not overwritten
        sqlite3.connect(db).execute("select * from sqlite_master").fetchall()


def test_json_lines_may_hold_line_separators(tmp_path, tiny_model_dir):
    inputs = _write(tmp_path / "in.jsonl", '{"text": "good\u2028film"}\n{"text": "bad"}\n'.encode())
    prompt = _prompt(tmp_path)
    result = runner.invoke(app, ["predict", "--prompt", str(prompt), "--input", str(inputs),
                                 "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.split("\n") if line.startswith("{")]  # not splitlines()
    assert [r["text"] for r in rows] == ["good\u2028film", "bad"]


def test_zero_step_runs_say_so(tmp_path, tiny_model_dir):
    task = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(task), "--model", str(tiny_model_dir), "--strategy",
                                 "gradient", "--max-seconds", "0.001", "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["steps"] == 0
    assert any("0 search steps" in w for w in out["warnings"])
    human = runner.invoke(app, ["search", "--task", str(task), "--model", str(tiny_model_dir), "--strategy",
                                "gradient", "--max-seconds", "0.001", "--seed", "1", "--out", str(tmp_path / "r")])
    assert "0 search steps" in human.output


def test_dry_run_says_how_many_steps(tmp_path, tiny_model_dir):
    task = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(task), "--model", str(tiny_model_dir), "--dry-run",
                                 "--budget", "2000", "--json"])
    plan = json.loads(result.output[result.output.index("{"):])
    assert plan["minimum_budget"] < 2000 and plan["steps"] >= 1
