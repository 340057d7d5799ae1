"""CLI: bad input gives one line naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autoprompt.cli import app
from autoprompt.search import get_strategy
from autoprompt.testing.tiny import toy_task_file

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], text


def test_help_explains_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("tasks", "models", "evaluate"):
        assert command in result.output
    assert "--verbalizer" in run("evaluate", "--help").output


def test_tasks_lists_availability(data_dir):
    result = run("tasks", "--data-dir", str(data_dir), "--json")
    rows = {r["task"]: r for r in json.loads(result.output)}
    assert "no full train" in rows["qnli"]["data"]
    assert "41 relations" in rows["lama:<relation>"]["data"]


def test_models_lists_default():
    rows = json.loads(run("models", "--json").output)
    assert rows[0]["alias"] == "smollm2-135m"


def test_evaluate_json(data_dir, tiny_model_dir):
    result = run("evaluate", "--task", "sst2", "--model", str(tiny_model_dir), "--limit", "10",
                 "--data-dir", str(data_dir), "--template", "{sentence} It was [P]",
                 "--verbalizer", '{"negative": ["bad"], "positive": ["good"]}', "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    for key in ("task", "split", "model", "n", "metric", "score", "template", "verbalizer", "per_class"):
        assert key in out
    assert out["n"] == 10 and out["split"] == "test"
    assert sum(c["gold"] for c in out["per_class"].values()) == 10


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--task", "nope"), "unknown task 'nope'"),
        (("--task", "sst2", "--template", "{sentence} [X] [P]"), "unknown slot at position 11"),
        (("--task", "sst2", "--template", "{sentence} [P] is it"), "[P] must be the last slot"),
        (("--task", "sst2", "--limit", "0"), "'--limit'"),
        (("--task", "sst2", "--verbalizer", '{"negative": ["bad"]}'), "do not match"),
        (("--task", "mnli", "--shots", "16"), "use --split dev"),
        (("--task", "sst2", "--split", "validation"), "unknown split"),
    ],
)
def test_bad_input(args, fragment, data_dir, tiny_model_dir):
    assert_one_line_error(run("evaluate", *args, "--model", str(tiny_model_dir), "--data-dir", str(data_dir)), fragment)


def test_missing_data_dir(tmp_path, tiny_model_dir):
    result = run("evaluate", "--task", "sst2", "--model", str(tiny_model_dir), "--data-dir", str(tmp_path / "no"))
    assert_one_line_error(result, "AUTOPROMPT_DATA_DIR")


def test_label_word_without_tokens(data_dir, tiny_masked_dir):
    # the tiny WordPiece vocabulary cannot spell a snowman
    result = run("evaluate", "--task", "sst2", "--model", str(tiny_masked_dir), "--data-dir", str(data_dir),
                 "--template", "{sentence} it was [P] .", "--verbalizer", '{"negative": ["☃"], "positive": ["good"]}')
    assert_one_line_error(result, "cannot be represented")


def test_empty_split(tmp_path, tiny_model_dir):
    (tmp_path / "test.csv").write_text("text,label\n")
    spec = tmp_path / "t.toml"
    spec.write_text('fields = ["text"]\nlabel_column = "label"\nlabels = ["0", "1"]\ntemplate = "{text} [P]"\n'
                    '[files]\ntest = "test.csv"\n[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')
    assert_one_line_error(run("evaluate", "--task", str(spec), "--model", str(tiny_model_dir)), "is empty")


def test_unknown_model_is_one_line(data_dir, tmp_path):
    result = run("evaluate", "--task", "sst2", "--model", str(tmp_path / "no-such-model"), "--data-dir", str(data_dir))
    assert_one_line_error(result, "cannot load model")


def test_strategies_lists_parameters():
    rows = {r["strategy"]: r for r in json.loads(run("strategies", "--json").output)}
    assert {"manual", "random", "gradient", "verbalizer", "paraphrase"} <= set(rows)
    assert "num_candidates: int = 10" in rows["gradient"]["params"]


def test_search_json_and_resume(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    args = ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "gradient",
            "--budget", "150", "--param", "num_candidates=3", "--param", "batch_size=4",
            "--out", str(tmp_path / "runs")]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    for key in ("task", "strategy", "model", "seed", "shots", "data_seed", "params", "metric", "prompt",
                "scores", "baseline", "budget", "wall_s", "versions", "run_dir"):
        assert key in out
    assert out["params"]["num_candidates"] == 3 and out["budget"]["used"] <= 150
    again = run("search", "--resume", out["run_dir"], "--json")  # a finished run returns its result
    assert json.loads(again.output[again.output.index("{"):])["prompt_fingerprint"] == out["prompt_fingerprint"]
    human = run(*args)
    assert human.exit_code == 0 and "manual baseline" in human.output and "artifacts:" in human.output
    scored = run("evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--prompt",
                 f"{out['run_dir']}/prompt.json", "--json")
    assert json.loads(scored.output[scored.output.index("{"):])["score"] == pytest.approx(out["scores"]["test"])


def test_search_dry_run(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    result = run("search", "--task", str(spec), "--model", str(tiny_model_dir), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output[result.output.index("{"):])
    assert plan["budget"] == get_strategy("gradient").default_budget and plan["estimated_search_s"] > 0
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--strategy", "nope"), "unknown strategy 'nope'"),
        (("--param", "nope=1"), "gradient has no parameter 'nope'"),
        (("--param", "num_candidates=many"), "not a valid int"),
        (("--param", "positions"), "not key=value"),
    ],
)
def test_search_bad_input(args, fragment, tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    result = run("search", "--task", str(spec), "--model", str(tiny_model_dir), "--out", str(tmp_path / "r"), *args)
    assert_one_line_error(result, fragment)


def test_resume_of_a_corrupt_checkpoint(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    (tmp_path / "runs").mkdir()
    folder = tmp_path / "runs" / "toy" / "gradient" / "x"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"task": str(spec), "strategy": "gradient",
                                                  "model": str(tiny_model_dir), "budget": 300}))
    (folder / "checkpoint.json").write_text("{oops")
    assert_one_line_error(run("search", "--resume", str(folder)), "corrupt")
    assert_one_line_error(run("search", "--resume", str(tmp_path)), "not a run folder")


def test_soft_prompt_search_evaluate_and_predict(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    result = run("search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "ptuning",
                 "--param", "steps=4", "--param", "eval_every=2", "--param", "batch_size=4", "--param", "gate=false",
                 "--out", str(tmp_path / "runs"), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    assert out["details"]["trainable_parameters"] == 10 * 32
    prompt = f"{out['run_dir']}/prompt.json"
    scored = run("evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--prompt", prompt, "--json")
    assert json.loads(scored.output[scored.output.index("{"):])["score"] == pytest.approx(out["scores"]["test"])

    inputs = tmp_path / "new.jsonl"
    inputs.write_text('{"text": "the film was great"}\n{"text": "the film was dull", "id": 7}\n')
    predicted = run("predict", "--prompt", prompt, "--input", str(inputs), "--output", str(tmp_path / "p.jsonl"))
    assert predicted.exit_code == 0, predicted.output
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["label"] in ("0", "1") for r in rows)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in rows)

    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"sentence": "wrong field"}\n')
    assert_one_line_error(run("predict", "--prompt", prompt, "--input", str(tmp_path / "bad.jsonl")),
                          "line 2 lacks the field(s) ['text']")
    assert_one_line_error(run("predict", "--prompt", prompt, "--input", str(tmp_path / "none.jsonl")),
                          "does not exist")
    (tmp_path / "runs" / "x").mkdir()
    (tmp_path / "runs" / "x" / "prompt.json").write_text(json.dumps({**json.loads(open(prompt).read())}))
    assert_one_line_error(run("predict", "--prompt", str(tmp_path / "runs" / "x" / "prompt.json"), "--input",
                              str(inputs)), "soft prompt file")
