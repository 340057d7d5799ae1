"""A model bigger than one device: spread by a device map (accelerate), here over the CPU and disk."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import AutopromptError, Evaluator, Prompt
from autoprompt.backends import weights_checksum
from autoprompt.backends.store import load_model
from autoprompt.cli import app
from autoprompt.search import SearchSpec, run_search

# the tiny llama's second layer lives on disk, memory-mapped by accelerate, the rest on the CPU
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk", "model.norm": "cpu",
         "model.rotary_emb": "cpu", "lm_head": "cpu"}


@pytest.fixture
def offloaded(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPROMPT_CACHE", str(tmp_path / "cache"))  # the offload folder lives under the cache
    return load_model(str(tiny_model_dir), device_map=SPLIT)


def test_an_offloaded_model_scores_and_differentiates_as_the_whole_one(offloaded, causal, task):
    assert offloaded.device_map == SPLIT and offloaded.device.type == "cpu"
    assert any(p.device.type == "meta" for p in offloaded.model.parameters())  # really not in memory
    prompt = Prompt("{sentence} [T] [T] It was [P]", task.task.default_prompt.verbalizer,
                    (causal.tokenize(" the")[-1], causal.tokenize(" plot")[-1]))
    whole = Evaluator(causal, task.task).score(prompt, task.dev).logprobs
    spread = Evaluator(offloaded, task.task).score(prompt, task.dev).logprobs
    assert torch.allclose(whole, spread, atol=1e-5)
    words = causal.word_table(prompt, task.task.labels)
    gold = [ex.label for ex in task.train[:6]]
    g_whole, loss_whole = causal.trigger_gradient([causal.encode(prompt, ex) for ex in task.train[:6]], words, gold)
    g_spread, loss_spread = offloaded.trigger_gradient([offloaded.encode(prompt, ex) for ex in task.train[:6]], words,
                                                       gold)
    assert torch.allclose(g_whole, g_spread, atol=1e-5) and loss_whole == pytest.approx(loss_spread, abs=1e-6)
    # the checksum reads the offloaded weights from their store: the same bytes as the whole model's
    assert offloaded.weights_checksum() == weights_checksum(causal.model)


def test_a_search_runs_on_an_offloaded_model_and_bf16_there_is_one_line(offloaded, task, tmp_path):
    spec = SearchSpec(task.task.name, "random", params={"num_candidates": 2, "num_triggers": 2}, budget=300,
                      out=str(tmp_path / "runs"))
    result = run_search(spec, lm=offloaded, data=task)
    assert result.backbone.unchanged and result.steps >= 1
    with pytest.raises(AutopromptError, match=r"dispatched by a device map: bf16 on a CPU .*set `dtype` to fp32$"):
        run_search(SearchSpec(task.task.name, "random", budget=300, out=str(tmp_path / "runs2"), dtype="bf16"),
                   lm=offloaded, data=task)


def test_auto_device_map_loads_and_an_unknown_one_is_refused(tiny_model_dir, causal, task, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPROMPT_CACHE", str(tmp_path / "cache"))
    auto = load_model(str(tiny_model_dir), device_map="auto")  # no GPU here: it all fits the CPU, nothing to spread
    assert auto.device.type == "cpu" and not any(p.device.type == "meta" for p in auto.model.parameters())
    prompt = task.task.default_prompt
    assert torch.allclose(Evaluator(auto, task.task).score(prompt, task.dev).logprobs,
                          Evaluator(causal, task.task).score(prompt, task.dev).logprobs, atol=1e-5)
    bad = CliRunner().invoke(app, ["search", "--task", "sst2", "--device-map", "everywhere"])
    assert bad.exit_code == 2 and bad.output.count("\n") == 1
    assert "unknown --device-map 'everywhere'; use auto, balanced" in bad.output
