"""Precision as a setting: a search's steps compute in bf16 when asked (or where the hardware has it,
with ``auto``); the gate, the dev/test scores and ``evaluate`` stay fp32; the backbone is untouched."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from typer.testing import CliRunner

from autoprompt import AutopromptError, Evaluator, Prompt, load_prompt
from autoprompt.api import evaluate
from autoprompt.backends import precision
from autoprompt.cli import app
from autoprompt.search import SearchContext, Searcher, SearchSpec, register, run_pipeline, run_search, unregister
from autoprompt.search import finish as finish_module
from autoprompt.search.selection import choose
from autoprompt.testing.tiny import tiny_causal_lm, toy_task_file


@pytest.mark.parametrize(("flags", "device", "expected"), [
    ({"avx512_bf16"}, "cpu", "bf16"), ({"amx_bf16", "avx512f"}, "cpu", "bf16"), ({"avx512f", "avx2"}, "cpu", "fp32"),
    (set(), "cpu", "fp32"),
])
def test_auto_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, flags, device, expected):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve_dtype("auto", device) == expected
    assert precision.resolve_dtype("fp32", device) == "fp32" and precision.resolve_dtype("bf16", device) == "bf16"


@dataclasses.dataclass
class _Probe(Searcher):
    """Records the precision the model computes in at each call the core makes."""

    name: ClassVar[str] = "probe"
    summary: ClassVar[str] = "records compute dtypes"
    seen: ClassVar[dict[str, set[str]]] = {}

    def start(self, ctx: SearchContext) -> dict:
        _Probe.seen.setdefault("start", set()).add(ctx.lm.compute_dtype)
        return {"best_dev": ctx.evaluator.score(ctx.start, ctx.dev).score}

    def step(self, ctx: SearchContext, state: dict) -> dict:
        _Probe.seen.setdefault("step", set()).add(ctx.lm.compute_dtype)
        logprobs = ctx.evaluator.score(ctx.start, ctx.train[:4]).logprobs
        _Probe.seen.setdefault("scores", set()).add(str(logprobs.dtype))
        return {**state, "done": True}

    def candidates(self, ctx: SearchContext, state: dict) -> list[Prompt]:
        _Probe.seen.setdefault("gate", set()).add(ctx.lm.compute_dtype)
        return [ctx.start]

    def best(self, ctx: SearchContext, state: dict) -> Prompt:
        return ctx.start


def test_the_steps_compute_in_bf16_and_the_gate_in_fp32(task, tmp_path, weights_kept):
    lm = tiny_causal_lm("llama")
    register(_Probe)
    try:
        _Probe.seen.clear()
        with weights_kept(lm):
            result = run_search(SearchSpec(task="tiny", strategy="probe", budget=500, out=str(tmp_path), dtype="bf16"),
                                lm=lm, data=task)
    finally:
        unregister("probe")
    assert _Probe.seen == {"start": {"bf16"}, "step": {"bf16"}, "scores": {"torch.float32"}, "gate": {"fp32"}}
    assert result.search_dtype == "bf16" and result.variant.endswith(" bf16")
    assert next(lm.model.parameters()).dtype == torch.float32 and lm.compute_dtype == "fp32"


def test_a_bf16_pipeline_gates_its_stages_and_itself_in_fp32(task, tmp_path, monkeypatch):
    """Every gate reads fp32, a pipeline's stage gates too: they decide near the threshold, and in
    bf16 they flipped on 2 of 3 SST-2 seeds (`results/precision_auto_stage_gates_bf16.json`)."""
    lm = tiny_causal_lm("llama")
    gates: list[str] = []

    def recording(*args, **kwargs):
        gates.append(lm.compute_dtype)
        return choose(*args, **kwargs)

    monkeypatch.setattr(finish_module, "choose", recording)
    register(_Probe)
    try:
        _Probe.seen.clear()
        result = run_pipeline(SearchSpec(task="tiny", strategy="probe,probe", budget=500, out=str(tmp_path),
                                       dtype="bf16"), lm=lm, data=task)
    finally:
        unregister("probe")
    assert _Probe.seen["gate"] == {"fp32"} and _Probe.seen["step"] == {"bf16"}
    assert gates == ["fp32", "fp32", "fp32"] and result.search_dtype == "bf16"
    assert lm.compute_dtype == "fp32"


def test_a_bf16_search_reports_fp32_scores_of_the_prompt_it_saved(causal, task, tmp_path):
    spec = SearchSpec(task="tiny", strategy="gradient", params={"num_candidates": 4, "batch_size": 6, "gate": False},
                      budget=400, seed=5, out=str(tmp_path), dtype="bf16")
    result = run_search(spec, lm=causal, data=task)
    found = load_prompt(Path(result.run_dir) / "prompt.json")
    fp32 = Evaluator(causal, task.task)
    assert result.scores.test == fp32.score(found, task.test).score
    assert result.scores.dev == fp32.score(found, task.dev).score
    assert result.baseline.test == fp32.score(task.task.default_prompt, task.test).score
    fp32_run = run_search(dataclasses.replace(spec, dtype="fp32", out=str(tmp_path / "fp32")), lm=causal, data=task)
    assert fp32_run.search_dtype == "fp32" and "bf16" not in fp32_run.variant


def test_bf16_class_scores_stay_close_to_fp32(causal, task):
    """On the tiny model (whose prompts lie within bf16's noise of each other, so it cannot test
    rankings: that is the real-model test below) the class log-probs move by less than 0.01 and the
    predictions agree."""
    torch.manual_seed(0)
    ids = torch.randint(300, causal.embedding_matrix().shape[0], (8, 2)).tolist()
    prompts = [Prompt("{sentence} [T] [T] It was [P]", {"negative": ["bad"], "positive": ["good"]}, trigger_ids=t)
               for t in ids]
    fp32 = [r.logprobs for r in Evaluator(causal, task.task).score_many(prompts, task.train)]
    with causal.computing_in("bf16"):
        bf16 = [r.logprobs for r in Evaluator(causal, task.task).score_many(prompts, task.train)]
    assert max((x - y).abs().max().item() for x, y in zip(fp32, bf16, strict=True)) < 0.01
    agree = torch.cat([x.argmax(1) == y.argmax(1) for x, y in zip(fp32, bf16, strict=True)]).float().mean()
    assert agree >= 0.95


def test_the_bf16_copy_casts_every_weight_but_shares_the_fp32_head():
    """The CPU's bf16 stand-in (built weight by weight for its peak memory; figures in benchmarks/README.md):
    every weight its own bf16 cast of the fp32 one, the input embedding included; the LM head the fp32
    weight itself; the frozen model untouched."""
    from autoprompt.backends.weights import bf16_body, weights_checksum  # noqa: PLC0415

    lm = tiny_causal_lm()
    model = lm.model
    before = weights_checksum(model)
    body = bf16_body(model)
    head, fp32_head = body.get_output_embeddings(), model.get_output_embeddings()
    assert head.weight is fp32_head.weight
    own = dict(model.named_parameters())
    for name, p in body.named_parameters():
        if p is fp32_head.weight:
            continue
        assert p.dtype == torch.bfloat16 and not p.requires_grad, name
        assert torch.equal(p, own[name].detach().to(torch.bfloat16)), name
        assert p.data_ptr() != own[name].data_ptr(), name
    assert body.get_input_embeddings().weight.dtype == torch.bfloat16
    assert all(b.dtype == torch.bfloat16 for b in body.buffers() if b.is_floating_point())
    assert weights_checksum(model) == before and all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.real_model
def test_bf16_ranks_trigger_prompts_on_sst2_as_fp32_does(data_dir):
    """16 random three-trigger prompts on SST-2's 32 train sentences (split 13): Kendall's tau between
    their fp32 and bf16 mean gold-class margins is at least 0.9 (measured 0.917)."""
    from autoprompt import load_model, load_task  # noqa: PLC0415

    lm, data = load_model("smollm2-135m"), load_task("sst2", data_dir, 16, 13, "smollm2-135m")
    manual = data.task.default_prompt
    torch.manual_seed(0)
    template = manual.template.source.replace("{sentence}", "{sentence} [T] [T] [T]")
    prompts = [Prompt(template, manual.verbalizer.to_json(), trigger_ids=t)
               for t in torch.randint(1000, 40000, (16, 3)).tolist()]
    labels = torch.tensor([ex.label for ex in data.train])

    def margins() -> list[float]:
        return [float((r.logprobs.gather(1, labels[:, None]) - r.logprobs.gather(1, 1 - labels[:, None])).mean())
                for r in Evaluator(lm, data.task).score_many(prompts, data.train)]

    fp32 = margins()
    with lm.computing_in("bf16"):
        bf16 = margins()
    pairs = [(i, j) for i in range(16) for j in range(i + 1, 16)]
    tau = sum(1 if (fp32[i] - fp32[j]) * (bf16[i] - bf16[j]) > 0 else -1 for i, j in pairs) / len(pairs)
    assert tau >= 0.9, tau


def test_an_unknown_dtype_is_one_line(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    result = CliRunner().invoke(app, ["search", "--task", str(spec), "--model", str(tiny_model_dir), "--strategy",
                                      "manual", "--dtype", "fp8", "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "unknown --dtype 'fp8'; use auto" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_evaluate_is_fp32_unless_asked_and_says_what_it_computed_in(tmp_path, tiny_model_dir):
    spec = toy_task_file(tmp_path)
    argv = ["evaluate", "--task", str(spec), "--model", str(tiny_model_dir), "--json"]
    runner = CliRunner()
    fp32, bf16 = (runner.invoke(app, [*argv, *extra]) for extra in ([], ["--dtype", "bf16"]))
    assert fp32.exit_code == 0 and bf16.exit_code == 0, fp32.output + bf16.output
    a, b = (json.loads(r.output[r.output.index("{"):]) for r in (fp32, bf16))
    assert (a["dtype"], b["dtype"]) == ("fp32", "bf16") and a["n"] == b["n"]
    bad = runner.invoke(app, [*argv, "--dtype", "half"])
    assert bad.exit_code == 2 and "unknown --dtype 'half'" in bad.output


def test_the_lama_suite_computes_every_relation_in_the_dtype_asked(data_dir):
    lm = tiny_causal_lm()
    result = evaluate("lama", model=lm, limit=1, dtype="bf16", data_dir=data_dir)
    assert result["dtype"] == "bf16" and {row["dtype"] for row in result["relations"]} == {"bf16"}
    assert len(result["relations"]) == 41 and result["n"] == 41
    with pytest.raises(AutopromptError, match=r"^`lama` ranks each relation's objects with its own prompt; pick one"):
        evaluate("lama", model=lm, limit=1, rule="centroid", data_dir=data_dir)
    with pytest.raises(AutopromptError, match=r"^unknown `dtype` 'fp16'"):
        evaluate("lama", model=lm, limit=1, dtype="fp16", data_dir=data_dir)
