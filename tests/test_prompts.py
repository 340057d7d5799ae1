import json
import subprocess
import sys

import pytest

from autoprompt import AutopromptError, Prompt, Template, Verbalizer


def test_template_segments_and_whitespace():
    t = Template("{premise} Question: {hypothesis} [T] [T] Answer: [P] .")
    kinds = [s.kind for s in t.segments]
    assert kinds == ["field", "text", "field", "trigger", "trigger", "text", "predict", "text"]
    assert t.fields == ("premise", "hypothesis")
    assert t.num_triggers == 2
    # whitespace in front of a slot belongs to the slot (so label words get their leading space)
    assert t.segments[2].space == " " and t.segments[1].value == " Question:"
    assert t.segments[6].space == " "
    assert not t.predict_is_last
    assert Template("{sentence} It was [P]").predict_is_last
    assert Template("{sentence} It was [P]  ").predict_is_last


def test_template_escapes_and_soft_slots():
    t = Template("[[x] {{y}} [S] [S] {sentence} [P]")
    assert t.segments[0] .value == "[x] {y}"
    assert t.num_soft == 2
    assert t.render({"sentence": "hi"}) == "[x] {y} [S] [S] hi [P]"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{sentence It was [P]", "position 0 is never closed"),
        ("{sentence} [X] [P]", "unknown slot at position 11"),
        ("{sentence} It was", "0 [P] slots"),
        ("{sentence} [P] [P]", "2 [P] slots"),
        ("{1bad} [P]", "not an identifier"),
        ("{sentence} } [P]", "stray '}' at position 11"),
    ],
)
def test_template_errors_name_position(source, fragment):
    with pytest.raises(AutopromptError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        Template(source)


def test_verbalizer_parse_and_errors():
    v = Verbalizer.parse('{"0": "terrible", "1": ["great", "good"]}')
    assert v.words == {"0": ("terrible",), "1": ("great", "good")}
    assert v.for_labels(["0", "1"]) == [("terrible",), ("great", "good")]
    with pytest.raises(AutopromptError, match="do not match"):
        v.for_labels(["neg", "pos"])
    with pytest.raises(AutopromptError, match="not valid JSON"):
        Verbalizer.parse("{oops")
    with pytest.raises(AutopromptError, match="non-empty"):
        Verbalizer({"0": []})


def test_prompt_round_trip_and_fingerprint(tmp_path):
    p = Prompt(Template("{sentence} [T] [T] It was [P]"), Verbalizer({"0": ["bad"], "1": ["good"]}), (5, 7),
               meta={"strategy": "gradient"})
    again = Prompt.from_json(json.loads(json.dumps(p.to_json())))
    assert again == p and again.fingerprint == p.fingerprint
    assert p.with_triggers((5, 8)).fingerprint != p.fingerprint
    # meta is provenance, not identity
    assert Prompt(p.template, p.verbalizer, p.trigger_ids).fingerprint == p.fingerprint
    path = tmp_path / "prompt.json"
    path.write_text(json.dumps(p.to_json()))
    assert Prompt.load(path) == p


def test_fingerprint_is_stable_across_processes():
    code = ("from autoprompt import Prompt; "
            "print(Prompt('{sentence} It was [P]', {'0': ['bad'], '1': ['good']}).fingerprint)")
    a = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    b = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert a == b
    assert a.strip() == Prompt("{sentence} It was [P]", {"0": ["bad"], "1": ["good"]}).fingerprint


def test_trigger_count_must_match():
    with pytest.raises(AutopromptError, match="2 \\[T\\] slots but 1"):
        Prompt("{sentence} [T] [T] [P]", {"0": ["a"]}, (1,))
    with pytest.raises(AutopromptError, match="has no \\[T\\]"):
        Prompt("{sentence} [P]", {"0": ["a"]}, (1,))


def test_prompt_load_errors(tmp_path):
    with pytest.raises(AutopromptError, match="does not exist"):
        Prompt.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(AutopromptError, match="not valid JSON"):
        Prompt.load(bad)
    bad.write_text('{"template": "{s} [P]"}')
    with pytest.raises(AutopromptError, match="field 'verbalizer' is missing"):
        Prompt.load(bad)


@pytest.mark.parametrize("source", ["{sentence} [T] [T] It was [P] .", "[[x] {{y}} [S] {a}\nQ: {b} [P]", "[P] : {s}"])
def test_template_from_segments_round_trip(source):
    t = Template(source)
    assert Template.from_segments(t.segments).segments == t.segments
