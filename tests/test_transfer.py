"""Prompt transfer between two tiny models with different tokenizers (byte-level BPE → sentencepiece)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import api
from autoprompt.backends.store import load_model
from autoprompt.cli import app
from autoprompt.errors import AutopromptError
from autoprompt.experiments.transfer import carry, transfer
from autoprompt.prompts import Prompt, load_prompt, save_prompt
from autoprompt.prompts.soft import SoftPrompt
from autoprompt.results import leaderboard
from autoprompt.testing.tiny import tiny_causal_lm, toy_task_file


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory) -> Path:
    """A second tiny causal LM, with a sentencepiece-style tokenizer: other ids, other pieces."""
    lm = tiny_causal_lm(seed=3, tokenizer_kind="sentencepiece")
    path = tmp_path_factory.mktemp("tiny-sp")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def run_dir(tmp_path, tiny_model_dir) -> Path:
    """A finished search's run folder on the source model (its own leaderboard beside it)."""
    spec = toy_task_file(tmp_path)
    result = api.search(str(spec), "gradient", ["num_candidates=3", "batch_size=4"], model=str(tiny_model_dir),
                        budget=150, out=tmp_path / "runs")
    return Path(result.run_dir)


def with_prompt(run_dir: Path, prompt: Prompt) -> Path:
    """The run folder holding ``prompt`` as its found prompt (whatever the gate kept in the search)."""
    save_prompt(prompt.with_meta(load_prompt(run_dir / "prompt.json").meta), run_dir / "prompt.json")
    return run_dir / "prompt.json"


def test_triggers_are_carried_as_their_decoded_text(causal):
    ids = causal.tokenize(" film was")
    prompt = Prompt("{sentence} [T] [T] It was [P]", {"negative": ["bad"], "positive": ["good"]}, ids[:2])
    carried = carry(prompt, causal)
    assert carried.prompt.trigger_ids == () and carried.prompt.template.num_triggers == 0
    assert carried.prompt.template.source == "{sentence}" + causal.decode(ids[:1]) + causal.decode(ids[1:2]) + \
        " It was [P]"
    assert carried.prompt.meta["transferred_from"] == causal.name and "decoded" in carried.notes[0]


def test_soft_vectors_are_carried_by_their_nearest_tokens(causal):
    ids = list(causal.tokenize(" the film"))[:2]
    slots = causal.embedding_matrix()[ids].clone() * 3.0  # nearest by cosine: the tokens themselves
    prompt = Prompt("[S] [S] {sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]},
                    soft=SoftPrompt(slots=slots))
    carried = carry(prompt, causal)
    assert carried.prompt.soft is None and carried.prompt.template.num_soft == 0
    assert carried.prompt.template.source.startswith(causal.decode(ids[:1]) + causal.decode(ids[1:]))
    assert "nearest" in carried.notes[0] and "hard prompt" in carried.notes[0]


def test_a_deep_prefix_does_not_transfer(causal):
    prefix = torch.zeros(2, 2, 2, 3, 8)
    prompt = Prompt("{sentence} It was [P]", {"negative": ["bad"], "positive": ["good"]},
                    soft=SoftPrompt(prefix=prefix))
    with pytest.raises(AutopromptError, match=r"prefix .* cannot be scored on another model"):
        carry(prompt, causal)


def test_transfer_scores_on_the_target_next_to_its_manual_prompt(run_dir, tiny_model_dir, target_dir):
    source = load_model(str(tiny_model_dir))
    ids = source.tokenize(" film was")[:2]
    path = with_prompt(run_dir, Prompt("{text} [T] [T] It was [P]", {"0": ["bad"], "1": ["good"]}, ids))
    out = transfer(path, str(target_dir))
    spec = json.loads((run_dir / "spec.json").read_text())
    carried = out["template"]
    assert "[T]" not in carried and source.decode(ids[:1]) in carried
    again = api.evaluate(spec["task"], template=carried, model=str(target_dir))  # the same evaluator, same examples
    manual = api.evaluate(spec["task"], model=str(target_dir))
    assert out["score"] == pytest.approx(again["score"]) and out["manual_score"] == pytest.approx(manual["score"])
    assert out["n"] == again["n"] and out["gain"]["delta"] == pytest.approx(out["score"] - out["manual_score"])
    assert out["source_model"] == source.name and out["model"] == load_model(str(target_dir)).name
    # provenance: a row of the target model that says where the prompt was found
    rows = leaderboard.load_rows(run_dir.parents[2] / "leaderboard.db")
    moved = [r for r in rows if r["source_model"] is not None]
    assert len(moved) == 1 and moved[0]["model"] == out["model"] and moved[0]["source_model"] == source.name
    assert moved[0]["variant"].endswith(f"(from {source.name})") and moved[0]["test"] == pytest.approx(out["score"])
    assert next(r for r in rows if r["source_model"] is None)["model"] == source.name
    written = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    assert written["source_model"] == source.name and written["details"]["transfer"]["source_run"] == str(run_dir)
    assert transfer(path, str(target_dir))["recorded"] is False  # the same transfer twice is one row


def test_a_calibrated_soft_prompt_is_recalibrated_on_the_target(run_dir, tiny_model_dir, target_dir):
    source = load_model(str(tiny_model_dir))
    slots = source.embedding_matrix()[list(source.tokenize(" film"))[:1]].clone()
    prompt = Prompt("[S] {text} It was [P]", {"0": ["bad"], "1": ["good"]}, soft=SoftPrompt(slots=slots),
                    calibration="contextual")
    out = transfer(with_prompt(run_dir, prompt), str(target_dir))
    assert any("nearest" in n for n in out["notes"]) and any("re-estimated" in n for n in out["notes"])
    carried = load_prompt(Path(out["run_dir"]) / "prompt.json")
    assert carried.calibration.method == "contextual" and carried.soft is None
    target = load_model(str(target_dir))
    raw = api.evaluate(json.loads((run_dir / "spec.json").read_text())["task"], prompt=carried.uncalibrated,
                       model=target, calibration="contextual")
    assert out["score"] == pytest.approx(raw["score"])  # the bias measured on the target, not the source's


def test_transfer_cli_json_and_a_prefix_is_a_one_line_error(run_dir, target_dir):
    result = CliRunner().invoke(app, ["transfer", "--prompt", str(run_dir / "prompt.json"), "--model",
                                      str(target_dir), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{"):])
    for key in ("task", "split", "n", "model", "source_model", "score", "manual_score", "gain"):
        assert key in out
    path = with_prompt(run_dir, Prompt("{text} It was [P]", {"0": ["bad"], "1": ["good"]},
                                       soft=SoftPrompt(prefix=torch.zeros(2, 2, 2, 3, 8))))
    bad = CliRunner().invoke(app, ["transfer", "--prompt", str(path), "--model", str(target_dir)])
    assert bad.exit_code == 2 and "Traceback" not in bad.output and "cannot be scored on another model" in bad.output


def test_a_model_named_by_a_relative_path_never_places_artifacts_outside_the_run(run_dir, target_dir, monkeypatch):
    import os  # noqa: PLC0415

    monkeypatch.chdir(run_dir)
    relative = os.path.relpath(target_dir, run_dir)  # "../../../..": the name itself climbs out
    out = api.transfer(run_dir / "prompt.json", relative, db=str(run_dir.parent / "lb.db"))
    written = [p for p in run_dir.parent.parent.parent.rglob("prompt.json") if "transfers" in p.parts]
    assert written and all(p.resolve().is_relative_to((run_dir / "transfers").resolve()) for p in written)
    assert out["model"] == relative
