"""The second reliability battery: user text is printed literally, never as markup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autoprompt.cli import app
from autoprompt.results.record import Interrupted
from autoprompt.testing.tiny import toy_task_file

runner = CliRunner()


@pytest.mark.parametrize("text", ["[/]", "[red]x[/red]", ":x:", "[bold]"])
def test_markup_and_emoji_codes_in_a_template_are_printed_as_written(tmp_path, tiny_model_dir, text):
    spec = toy_task_file(tmp_path)
    literal = text.replace("[", "[[")  # a literal bracket in a template is written [[
    result = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                 "--template", "{text} " + literal + " It was [P]"])
    assert result.exit_code == 0, result.output
    flat = "".join(result.output.split())  # the console wraps long lines
    assert "".join(f"{literal} It was [P]".split()) in flat and "Traceback" not in result.output  # the source


@pytest.mark.parametrize("label_word", ["[red]good", ":x:", "[/]"])
def test_markup_in_label_words_is_printed_as_written(tmp_path, tiny_model_dir, label_word):
    spec = toy_task_file(tmp_path)
    words = json.dumps({"0": ["bad"], "1": [label_word]})
    result = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                 "--verbalizer", words])
    assert result.exit_code == 0, result.output
    assert json.dumps(label_word) in "".join(result.output.split())


@pytest.mark.parametrize("template", ["{text} [/] [P]", "{text} [red]oops[/red] [P]", "{text} :x: [nope] [P]"])
def test_markup_in_an_error_message_is_printed_as_written(tmp_path, tiny_model_dir, template):
    spec = toy_task_file(tmp_path)
    result = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                 "--template", template])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert repr(template)[1:-1] in lines[0]  # the template quoted whole, markup and emoji codes included


def test_control_characters_in_user_text_do_not_reach_the_terminal(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    result = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                 "--template", "{text} \x1b[31m [P]"])
    assert "\x1b[31m" not in result.output


def one_line_error(result, fragment: str) -> None:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output, result.output
    assert fragment in lines[0], lines[0]


GOOD_PROMPT = {"template": "{text} It was [P]", "verbalizer": {"0": ["bad"], "1": ["good"]}}


@pytest.mark.parametrize(("content", "fragment"), [
    (b"\xff\xfe{ not utf-8", "is not UTF-8 text"),
    (b"", "is empty"),
    (b'{"template": "{text} It was [P]", "verbal', "is not valid JSON"),
    (b"[1, 2]", "does not hold a JSON object (it holds list)"),
    (None, "is a folder; give the file itself"),
    (json.dumps({**GOOD_PROMPT, "calibration": {"method": "prior", "log_prior": {"0": float("-inf"), "1": -0.5}}}
                ).encode(), "prompt.json: calibration log_prior must hold one log-probability"),
    (json.dumps({**GOOD_PROMPT, "template": "{text} [/] [P]"}).encode(), "prompt.json: template"),
])
def test_a_prompt_file_that_cannot_be_read_is_one_line(tmp_path, tiny_model_dir, content, fragment):
    spec = toy_task_file(tmp_path)
    path = tmp_path / "p" / "prompt.json"
    if content is None:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    one_line_error(runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir),
                                       "--prompt", str(path)]), fragment)


def test_an_infinite_calibration_prior_is_refused():
    from autoprompt import AutopromptError, Calibration  # noqa: PLC0415

    with pytest.raises(AutopromptError, match="one log-probability"):
        Calibration("prior", {"0": float("-inf"), "1": -0.1})


def test_a_soft_prompt_holding_nan_is_one_line_before_anything_is_printed(tmp_path, tiny_model_dir):
    import torch  # noqa: PLC0415

    from autoprompt import SoftPrompt  # noqa: PLC0415

    folder = tmp_path / "soft"
    folder.mkdir()
    SoftPrompt(slots=torch.full((2, 32), float("nan"))).save(folder / "soft.safetensors")
    (folder / "prompt.json").write_text(json.dumps({"template": "[S] [S] {text} It was [P]",
                                                    "verbalizer": GOOD_PROMPT["verbalizer"],
                                                    "soft": "soft.safetensors"}))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"text": "fine"}\n')
    result = runner.invoke(app, ["predict", "--prompt", str(folder / "prompt.json"), "--input", str(inputs),
                                 "--model", str(tiny_model_dir)])
    one_line_error(result, "hold NaN or infinite values")
    assert "NaN" not in result.output.replace("hold NaN", "")


def test_leaderboard_import_says_which_files_it_skipped_and_why(tmp_path):
    nan = b'{"task": "t", "strategy": "s", "model": "m", "scores": {"dev": NaN, "test": 0.5}, ' \
          b'"baseline": {"dev": 0.5, "test": 0.5}}'
    for name, content in {"a": b"[]", "b": b"{}", "c": b'{"task": "caf\xe9"}', "e": b"", "f": nan}.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "result.json").write_bytes(content)
    (tmp_path / "runs" / "d" / "result.json").mkdir(parents=True)
    result = runner.invoke(app, ["leaderboard", "import", str(tmp_path / "runs"), "--db", str(tmp_path / "lb.db")])
    assert result.exit_code == 0 and "0 runs added" in result.output, result.output
    for fragment in ("holds list", "not a result file", "not UTF-8", "is a folder", "is empty",
                     "scores.dev is nan, not a finite number"):
        assert fragment in result.output, fragment


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(10**20)])
def test_a_seed_out_of_range_is_refused_before_any_work(tmp_path, tiny_model_dir, seed):
    spec = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy",
                                 "manual", "--seed", seed, "--out", str(tmp_path / "runs")])
    one_line_error(result, "--seed must be between 0 and 4294967295")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content", [b"", b'{"task": "toy", "scor', b"[]"])
def test_resume_with_a_damaged_result_is_one_line(tmp_path, tiny_model_dir, content):
    spec = toy_task_file(tmp_path)
    done = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "manual",
                               "--out", str(tmp_path / "runs"), "--json"])
    assert done.exit_code == 0, done.output
    run_dir = json.loads(done.output[done.output.index("{"):])["run_dir"]
    (tmp_path / "runs" / run_dir.split("/runs/")[-1] / "result.json").write_bytes(content)
    one_line_error(runner.invoke(app, ["search", "--resume", run_dir]), "result file")


@pytest.fixture
def links(tmp_path):
    """A dangling symlink and a symlink loop inside ``tmp_path``."""
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return tmp_path


@pytest.mark.parametrize("out", ["dangling", "loop-a", "dangling/sub"])
def test_search_out_at_a_broken_link_is_one_line_and_never_hangs(links, tiny_model_dir, out):
    spec = toy_task_file(links)
    result = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy",
                                 "manual", "--out", str(links / out)])
    one_line_error(result, "broken symbolic link")
    assert not (links / "nowhere").exists()


@pytest.mark.parametrize(("argv", "fragment"), [
    (["leaderboard", "--db", "{links}/loop-a"], "Symlink loop"),
    (["report", "--db", "{links}/x.db", "--out", "{links}/dangling"], "broken symbolic link"),
    (["report", "--db", "{links}/x.db", "--out", "{links}/loop-a"], "broken symbolic link"),
])
def test_links_as_database_or_report_paths_are_one_line(links, argv, fragment):
    one_line_error(runner.invoke(app, [a.format(links=links) for a in argv]), fragment)


def _custom_task(tmp_path, data: bytes, name: str = "test.jsonl") -> str:
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    (folder / "task.toml").write_text(
        'fields = ["text"]\nlabel_column = "label"\nlabels = ["0", "1"]\ntemplate = "{text} It was [P]"\n'
        f'[files]\ntest = "{name}"\n[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')
    return str(folder / "task.toml")


@pytest.mark.parametrize(("data", "name", "fragment"), [
    (b'{"text": "good", "label": "1"}\n{"text": "bad", "label": \n', "test.jsonl", "line 2 is not JSON"),
    (b'{"text": "good", "label": "1"}\n{"text": null, "label": "0"}\n', "test.jsonl",
     "row 2: column 'text' holds null, not text"),
    (b'{"text": ["a", "b"], "label": "1"}\n', "test.jsonl", "row 1: column 'text' holds list, not text"),
    (b'{"text": "good", "label": null}\n', "test.jsonl", "column 'label' holds null"),
    (b"text,label,text\nfine,1,other\n", "test.csv", "the column name(s) ['text'] appear more than once"),
    ("text,label\ncaf\u00e9,1\nna\u00efve,0\n".encode() + b"bad \xff byte,1\n", "test.csv",
     "line 4 is not UTF-8 (byte 0xff)"),
])
def test_data_readers_refuse_what_they_cannot_read_faithfully(tmp_path, tiny_model_dir, data, name, fragment):
    task = _custom_task(tmp_path, data, name)
    one_line_error(runner.invoke(app, ["evaluate", "--task", task, "--model", str(tiny_model_dir)]), fragment)


@pytest.mark.parametrize(("data", "name"), [
    (("text,label," + "x" * 10_000 + "\u2028![a](b)\nfine,1\n").encode(), "test.csv"),  # a row shorter than the header
    (b'{"text": "good", "label": "' + b"y" * 10_000 + b'"}\n', "test.jsonl"),          # an unknown label
    (b'{"txt": "good", "label": "1", "' + b"z" * 10_000 + b'": 1}\n', "test.jsonl"),    # a missing column
])
def test_an_error_quotes_a_data_file_in_a_bounded_excerpt(tmp_path, tiny_model_dir, data, name):
    task = _custom_task(tmp_path, data, name)
    result = runner.invoke(app, ["evaluate", "--task", task, "--model", str(tiny_model_dir)])
    one_line_error(result, "test.")
    assert len(result.output) < 400 and "x" * 100 not in result.output


def test_numbers_in_a_jsonl_file_are_read_as_their_text(tmp_path, tiny_model_dir):
    task = _custom_task(tmp_path, b'{"text": 42, "label": 1}\n{"text": "bad", "label": 0}\n')
    result = runner.invoke(app, ["evaluate", "--task", task, "--model", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["n"] == 2


def test_a_class_absent_from_train_is_said_in_one_line(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    train = tmp_path / "train.csv"
    train.write_text("".join(line + "\n" for line in train.read_text().splitlines() if not line.endswith(",0")))
    argv = ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--out", str(tmp_path / "runs")]
    result = runner.invoke(app, [*argv, "--strategy", "manual"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "has no example of class 0" in line]
    assert warnings and warnings[0].startswith("warning: custom task toy: its train split")
    refused = runner.invoke(app, [*argv, "--strategy", "verbalizer"])  # before any work: the warning, then the error
    assert refused.exit_code == 2 and "Traceback" not in refused.output and "fwd" not in refused.output
    assert refused.output.splitlines()[-1].startswith("error: strategy verbalizer needs train examples of every class")


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--verbalizer", '{"0": ["good"], "1": ["good"]}'], "the word 'good' stands for both label '0' and label '1'"),
])
def test_one_label_word_for_two_classes_is_refused(tmp_path, tiny_model_dir, extra, fragment):
    spec = toy_task_file(tmp_path)
    one_line_error(runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), *extra]),
                   fragment)


@pytest.mark.parametrize(("params", "fragment"), [
    (["--param", "min_gain=1", "--param", "min_gain=2"], "parameter 'min_gain' is given twice"),
    (["--param", "=3"], "has no name"),
    (["--param", "nothing"], "is not key=value"),
])
def test_duplicate_or_empty_params_are_refused(tmp_path, tiny_model_dir, params, fragment):
    spec = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy",
                                 "manual", *params, "--out", str(tmp_path / "runs")])
    one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("where", ["outside", "absolute", "missing-outside"])
def test_a_task_spec_reads_no_file_outside_its_folder_unless_it_says_so(tmp_path, tiny_model_dir, where):
    outside = tmp_path / "secret.csv"
    outside.write_text("text,label\nthe secret line,1\n")
    folder = tmp_path / "spec"
    folder.mkdir()
    name = {"outside": "../secret.csv", "absolute": str(outside), "missing-outside": "../nothing.csv"}[where]
    spec = folder / "task.toml"
    body = ('fields = ["text"]\nlabel_column = "label"\nlabels = ["0", "1"]\ntemplate = "{text} It was [P]"\n'
            f'[files]\ntest = "{name}"\n[verbalizer]\n"0" = ["bad"]\n"1" = ["good"]\n')
    spec.write_text(body)
    result = runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir)])
    one_line_error(result, "is outside the spec's folder")
    assert "secret line" not in result.output
    if where == "outside":  # the documented opt-in reads it
        spec.write_text("data_outside = true\n" + body)
        assert runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir)]).exit_code == 0


@pytest.mark.parametrize("soft", ["../elsewhere/soft.safetensors", "/tmp/soft.safetensors"])
def test_a_prompt_file_loads_no_tensors_outside_its_folder(tmp_path, soft):
    from autoprompt import AutopromptError, load_prompt  # noqa: PLC0415

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "prompt.json").write_text(json.dumps({**GOOD_PROMPT, "template": "[S] {text} It was [P]",
                                                    "soft": soft}))
    with pytest.raises(AutopromptError, match="is outside the prompt's folder"):
        load_prompt(folder / "prompt.json")


def test_a_prompt_saved_elsewhere_takes_its_tensors_with_it(tmp_path):
    import torch  # noqa: PLC0415

    from autoprompt import Prompt, SoftPrompt, load_prompt, save_prompt  # noqa: PLC0415

    first = tmp_path / "stage" / "prompt.json"
    first.parent.mkdir()
    save_prompt(Prompt("[S] {text} It was [P]", GOOD_PROMPT["verbalizer"], soft=SoftPrompt(torch.ones(1, 4))), first)
    loaded = load_prompt(first)
    second = tmp_path / "final" / "prompt.json"
    second.parent.mkdir()
    save_prompt(loaded, second)
    fingerprint = loaded.fingerprint
    (first.parent / "soft.safetensors").unlink()  # the copy stands on its own
    again = load_prompt(second)
    assert json.loads(second.read_text())["soft"] == "soft.safetensors" and again.fingerprint == fingerprint


def _finished_manual_run(tmp_path, tiny_model_dir) -> tuple[str, str]:
    spec = toy_task_file(tmp_path)
    done = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "manual",
                               "--out", str(tmp_path / "runs"), "--json"])
    assert done.exit_code == 0, done.output
    return str(spec), json.loads(done.output[done.output.index("{"):])["run_dir"]


@pytest.mark.parametrize("flag", [["--seed", "3"], ["--out", "elsewhere"], ["--model", "gpt2"], ["--data-seed", "21"]])
def test_resume_refuses_settings_it_would_ignore(tmp_path, tiny_model_dir, flag):
    _, run_dir = _finished_manual_run(tmp_path, tiny_model_dir)
    one_line_error(runner.invoke(app, ["search", "--resume", run_dir, *flag]), f"{flag[0]} cannot change it")


def test_a_run_folder_in_use_is_refused_and_a_resume_records_where_the_folder_is(tmp_path, tiny_model_dir):
    from autoprompt.io import folder_lock  # noqa: PLC0415

    _, run_dir = _finished_manual_run(tmp_path, tiny_model_dir)
    with folder_lock(run_dir):  # another process resuming it (flock is per open file, so this counts)
        one_line_error(runner.invoke(app, ["search", "--resume", run_dir]), "is in use by another process")
    # an edited spec.json cannot send the resumed run's records anywhere else
    spec_path = tmp_path / "runs" / run_dir.split("/runs/")[-1] / "spec.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "out": str(tmp_path / "hijacked")}))
    result = runner.invoke(app, ["search", "--resume", run_dir])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "hijacked").exists() and (tmp_path / "runs" / "leaderboard.db").is_file()


@pytest.mark.parametrize("strategy", ["random", "random,random"])
def test_resuming_a_read_only_run_folder_is_one_line_before_any_work(tmp_path, tiny_model_dir, monkeypatch,
                                                                     strategy):
    import errno  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from autoprompt.search import SearchSpec, run_pipeline, run_search  # noqa: PLC0415

    spec = SearchSpec(task=str(toy_task_file(tmp_path)), strategy=strategy, model=str(tiny_model_dir), budget=200,
                      params={"num_candidates": 2, "rescore_examples": 4} if "," not in strategy else
                      {"random.num_candidates": 2, "random.rescore_examples": 4}, out=str(tmp_path / "runs"))
    run = run_pipeline if "," in strategy else run_search
    part = run(spec, stop_after=1)
    assert isinstance(part, Interrupted)
    folder = tmp_path / "runs" / part.run_dir.split("/runs/")[-1].split("/stages/")[0]
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # the folder is read-only (chmod does not stop root, so the OS is told to say it)
        if str(kwargs.get("dir", "")).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    one_line_error(runner.invoke(app, ["search", "--resume", str(folder)]), "Read-only file system")
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before  # nothing changed in it


@pytest.mark.parametrize("name", ["..", "../../escape", "/tmp/abs", ".hidden"])
def test_a_task_name_is_never_a_path_as_given(tmp_path, tiny_model_dir, name):
    from autoprompt.io import path_part  # noqa: PLC0415

    part = path_part(name)
    assert "/" not in part and not part.startswith(".") and part not in ("", ".", "..")
    (tmp_path / "t").mkdir()
    spec = toy_task_file(tmp_path / "t")
    spec.write_text(spec.read_text().replace('name = "toy"', f"name = {json.dumps(name)}"))
    result = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "manual",
                                 "--out", str(tmp_path / "runs"), "--json"])
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.output[result.output.index("{"):])["run_dir"]).resolve()
    assert run_dir.parent.parent.parent == (tmp_path / "runs").resolve()  # runs/<task>/<strategy>/<run>
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "t"]


@pytest.mark.parametrize("damage", ["truncated", "random", "wrong-shape"])
def test_a_broken_model_folder_is_one_line(tmp_path, tiny_model_dir, damage):
    import os  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    weights = folder / "model.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "random":
        weights.write_bytes(os.urandom(4096))
    else:  # the config says another size than the weights hold
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    spec = toy_task_file(tmp_path)
    one_line_error(runner.invoke(app, ["evaluate", "--task", str(spec), "--model", str(folder)]), "cannot load model")


def test_a_prior_estimated_at_another_batch_size_keeps_the_fingerprint(causal, task):
    from autoprompt import Evaluator  # noqa: PLC0415

    prompt = task.task.default_prompt
    priors = [Evaluator(causal, task.task, batch_size=b).calibrate([prompt], "prior", task.train)[0]
              for b in (1, 4, 32)]
    assert len({p.fingerprint for p in priors}) == 1
    noisy = priors[0].calibration.log_prior
    nudged = {k: v * (1 + 1e-9) for k, v in noisy.items()}
    assert priors[0].with_calibration(type(priors[0].calibration)("prior", nudged)).fingerprint == priors[0].fingerprint


def test_a_prefix_for_another_depth_is_one_line(causal, task):
    import torch  # noqa: PLC0415

    from autoprompt import AutopromptError, Evaluator, Prompt, SoftPrompt  # noqa: PLC0415

    prefix = torch.zeros(5, 2, 2, 3, 8)  # the tiny model has 2 layers
    prompt = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]},
                    soft=SoftPrompt(prefix=prefix))
    with pytest.raises(AutopromptError, match="prefix has 5 layers but tiny-llama has 2"):
        Evaluator(causal, task.task).score(prompt, task.test)


@pytest.mark.parametrize("db", [":memory:", "sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_leaderboard_is_refused(tmp_path, db):
    (tmp_path / "runs").mkdir()
    one_line_error(runner.invoke(app, ["leaderboard", "import", str(tmp_path / "runs"), "--db", db]),
                   "lives in memory and forgets every row at exit")


def test_a_nearly_full_disk_is_refused_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    import shutil  # noqa: PLC0415
    from collections import namedtuple  # noqa: PLC0415

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**9, 10**9 - 2**20, 2**20))
    spec = toy_task_file(tmp_path)
    result = runner.invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy",
                                 "manual", "--out", str(tmp_path / "runs")])
    one_line_error(result, "only 1 MiB free on its disk")
    assert not (tmp_path / "runs").exists()


def test_the_free_space_needed_grows_with_what_the_run_will_write(tmp_path, tiny_model_dir, monkeypatch):
    import shutil  # noqa: PLC0415
    from collections import namedtuple  # noqa: PLC0415

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(10**12, 10**12 - 80 * 2**20, 80 * 2**20))
    spec = toy_task_file(tmp_path)
    argv = ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy", "manual",
            "--out", str(tmp_path / "runs")]
    assert runner.invoke(app, [*argv, "--budget", "3000"]).exit_code == 0  # 80 MiB hold a 3,000-forward run
    # a million example-forwards of cached scores and trace lines do not fit in 80 MiB
    one_line_error(runner.invoke(app, [*argv, "--budget", "1000000"]), "only 80 MiB free on its disk")


def test_a_disk_that_fills_mid_run_leaves_the_run_resumable(tmp_path, causal, task, monkeypatch):
    import errno  # noqa: PLC0415
    import os  # noqa: PLC0415

    from autoprompt import AutopromptError  # noqa: PLC0415
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="random", params={"num_candidates": 2, "rescore_examples": 4},
                      budget=150, out=str(tmp_path / "runs"))
    full = run_search(spec, lm=causal, data=task)
    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # a write after the first checkpoints
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(AutopromptError, match=r"No space left on device.*nothing was half-written"):
        run_search(spec, lm=causal, data=task)
    monkeypatch.setattr(os, "fsync", real_fsync)
    folders = sorted((tmp_path / "runs" / "tiny" / "random").iterdir())
    broken = next(f for f in folders if not (f / "result.json").exists())
    assert not list(broken.glob(".*.tmp"))  # no temporary file left behind
    resumed = run_search(spec, lm=causal, data=task, resume=broken)
    assert resumed.scores == full.scores and resumed.prompt_fingerprint == full.prompt_fingerprint


def _noisy_causal():
    """A tiny causal LM whose scores move in the 4th digit with the batch size, as real kernels move in the
    last bits: a result read back from a cache and one scored again in another batch then differ."""
    import torch  # noqa: PLC0415

    from autoprompt.testing import tiny_causal_lm  # noqa: PLC0415

    lm = tiny_causal_lm("llama")
    direction = torch.linspace(-1, 1, lm.model.config.hidden_size)
    lm.model.model.norm.register_forward_hook(lambda _m, _a, out: out + 1e-3 * out.shape[0] * direction)
    return lm


@pytest.mark.parametrize("strategy", ["gradient", "verbalizer"])
def test_a_resumed_search_selects_on_the_numbers_of_the_uninterrupted_one(tmp_path, task, strategy):
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    lm = _noisy_causal()
    params = {"calibration": "prior", **({"num_candidates": 4, "batch_size": 6} if strategy == "gradient" else {})}

    def spec(name: str) -> SearchSpec:
        return SearchSpec(task="tiny", strategy=strategy, params=params, budget=400, seed=5,
                          out=str(tmp_path / name))

    full = run_search(spec("full"), lm=lm, data=task)
    assert full.steps >= 2
    for after in range(1, min(3, full.steps)):  # killed after a step: the checkpoint keeps what the steps read
        part = run_search(spec(f"part{after}"), lm=lm, data=task, stop_after=after)
        assert isinstance(part, Interrupted)
        resumed = run_search(spec(f"part{after}"), lm=lm, data=task, resume=part.run_dir)
        assert resumed.selection == full.selection and resumed.prompt == full.prompt
    # killed during the final scoring: the last checkpoint holds everything the gate reads
    (tmp_path / full.run_dir / "result.json").unlink()
    again = run_search(spec("full"), lm=lm, data=task, resume=full.run_dir)
    assert again.selection == full.selection


def test_a_full_disk_on_the_trace_is_one_line_and_the_run_resumes(tmp_path, causal, task, monkeypatch):
    import errno  # noqa: PLC0415
    from pathlib import Path as P  # noqa: PLC0415

    from autoprompt import AutopromptError  # noqa: PLC0415
    from autoprompt.search import SearchSpec, run_search  # noqa: PLC0415

    spec = SearchSpec(task="tiny", strategy="random", params={"num_candidates": 2, "rescore_examples": 4},
                      budget=150, out=str(tmp_path / "runs"))
    full = run_search(spec, lm=causal, data=task)
    real_open, lines = P.open, {"n": 0}

    def full_disk(self, mode="r", *args, **kwargs):
        if self.name == "trace.jsonl" and mode == "a":
            lines["n"] += 1
            if lines["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(P, "open", full_disk)
    with pytest.raises(AutopromptError, match=r"trace.jsonl \(No space left on device\); the run can be resumed"):
        run_search(spec, lm=causal, data=task)
    monkeypatch.setattr(P, "open", real_open)
    broken = next(f for f in (tmp_path / "runs" / "tiny" / "random").iterdir() if not (f / "result.json").exists())
    resumed = run_search(spec, lm=causal, data=task, resume=broken)
    assert resumed.scores == full.scores and resumed.selection == full.selection
