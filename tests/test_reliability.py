"""The second reliability battery: user text is printed literally, never as markup."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autoprompt.cli import app
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
