"""bf16 against fp32 on this CPU, side by side in one process (issue 42): speed, agreement, and the
machine's own matmul peak.

On 16-shot SST-2 (smollm2-135m), in both precisions (`FrozenLM.computing_in`):

* evaluator examples/s (the manual prompt on test sentences) and its achieved FLOP/s — 2 × the
  parameters outside the embeddings × tokens run, with and without the padding — as a fraction of
  the machine's matmul peak (a large GEMM at the thread count in use);
* gradient re-scoring: trigger candidates scored per second on a batch of train sentences;
* agreement: Kendall's tau between the fp32 and bf16 rankings of the candidate sets of several
  re-scoring steps (random three-trigger candidates, each set seeded);
* whole searches (`gradient`, and `auto` light unless ``--quick``) run with ``dtype=fp32`` and
  ``dtype=bf16`` from the same seed: wall time of the whole run, start to ``result.json`` (the
  throughput a user sees, the fp32 gate and dev/test scoring of the found prompt included; the manual
  prompt's scores are computed once beforehand, as every run in a process shares them;
  ``speedup`` = fp32 seconds / bf16 seconds), whether the gate decided alike, and the found prompt's
  test score with each (fp32 scoring, the paired standard error of their difference).

Writes ``{"speedup", "kendall_tau", "same_gate", ...}`` to ``--out`` (default
``benchmarks/results/precision.json``).

    python benchmarks/precision.py --quick --out /tmp/precision.json   # under 10 minutes here
    python benchmarks/precision.py --seeds 13,21,42                      # gradient and auto light, 3 seeds
    python benchmarks/precision.py --seeds 13,21,42 --strategies auto --out benchmarks/results/precision_auto.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from autoprompt import Evaluator, Prompt, load_model, load_prompt, load_task
from autoprompt.backends.precision import cpu_flags, native_bf16
from autoprompt.io import atomic_write_json
from autoprompt.results.versions import versions
from autoprompt.search import SearchSpec, run_pipeline, run_search
from autoprompt.search.finish import manual_baseline
from autoprompt.search.selection import bootstrap_delta

RESULTS = Path(__file__).parent / "results"


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an ``n``³ matmul in ``dtype`` at the current thread count (best of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def body_parameters(lm: Any) -> int:
    """Weights a token's forward multiplies by: all but the input embeddings (the LM head counts: it
    runs at the positions the evaluator reads, here one per example)."""
    embed = lm.model.get_input_embeddings().weight.numel()
    return lm.num_parameters() - embed


def evaluator_rate(lm: Any, data: Any, examples: list, dtype: str) -> dict[str, float]:
    """Examples/s and achieved FLOP/s (real and padded tokens) of the evaluator in ``dtype``."""
    prompt = data.task.default_prompt
    with lm.computing_in(dtype):
        Evaluator(lm, data.task, cache=False).score(prompt, examples[:8])  # warm-up (and the bf16 copy)
        ev = Evaluator(lm, data.task, cache=False)
        seconds = _timed(lambda: ev.score(prompt, examples))
    flops = 2 * body_parameters(lm)
    real, padded = ev.stats["real_tokens"], ev.stats["padded_tokens"]
    return {"examples_per_s": len(examples) / seconds, "seconds": seconds,
            "flops_real": flops * real / seconds, "flops_padded": flops * (real + padded) / seconds}


def candidate_sets(lm: Any, data: Any, n_sets: int, size: int) -> list[list[Prompt]]:
    """``n_sets`` seeded sets of ``size`` random three-trigger candidates on the manual template."""
    manual = data.task.default_prompt
    template = manual.template.source.replace("{sentence}", "{sentence} [T] [T] [T]")
    vocab = lm.embedding_matrix().shape[0]
    out = []
    for k in range(n_sets):
        gen = torch.Generator().manual_seed(k)
        ids = torch.randint(1000, min(40000, vocab), (size, 3), generator=gen).tolist()
        out.append([Prompt(template, manual.verbalizer.to_json(), trigger_ids=t) for t in ids])
    return out


def kendall_tau(a: list[float], b: list[float]) -> float:
    pairs = [(i, j) for i in range(len(a)) for j in range(i + 1, len(a))]
    return sum(1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 for i, j in pairs) / len(pairs)


def rescoring(lm: Any, data: Any, sets: list[list[Prompt]]) -> dict[str, Any]:
    """Candidates/s in each precision and the tau of each set's ranking by the mean gold-class margin."""
    examples = data.train
    labels = torch.tensor([ex.label for ex in examples])

    def margins(prompts: list[Prompt], dtype: str) -> tuple[list[float], float]:
        with lm.computing_in(dtype):
            ev = Evaluator(lm, data.task, cache=False)
            started = time.perf_counter()
            results = ev.score_many(prompts, examples)
            seconds = time.perf_counter() - started
        return [float((r.logprobs.gather(1, labels[:, None]) - r.logprobs.gather(1, 1 - labels[:, None])).mean())
                for r in results], seconds

    taus, times = [], {"fp32": 0.0, "bf16": 0.0}
    for prompts in sets:
        a, ta = margins(prompts, "fp32")
        b, tb = margins(prompts, "bf16")
        taus.append(kendall_tau(a, b))
        times["fp32"] += ta
        times["bf16"] += tb
    n = sum(len(s) for s in sets)
    return {"kendall_tau_per_step": [round(t, 4) for t in taus], "kendall_tau": statistics.mean(taus),
            "candidates_per_s": {k: n / v for k, v in times.items()},
            "speedup": times["fp32"] / times["bf16"], "examples_per_candidate": len(examples)}


def searches(lm: Any, seeds: list[int], strategies: list[tuple[str, dict[str, Any], int | None]]) -> list[dict]:
    """Each search in fp32 and bf16 from one seed: step time, gate decisions, test scores."""
    rows = []
    for seed in seeds:
        data = load_task("sst2", None, 16, seed, lm.name)
        # the manual prompt's dev and test scores are computed once per process and reused by every run
        # (`manual_baseline`): compute them first, or the first run would pay for both precisions
        for split in (data.dev, data.test):
            manual_baseline(Evaluator(lm, data.task), data.task.default_prompt, split)
        for strategy, params, budget in strategies:
            pair = {}
            for dtype in ("fp32", "bf16"):
                with tempfile.TemporaryDirectory() as out:
                    spec = SearchSpec(task="sst2", strategy=strategy, params=dict(params), shots=16, data_seed=seed,
                                      seed=0, budget=budget, out=out, dtype=dtype)
                    run = run_pipeline if strategy == "auto" or "," in strategy else run_search
                    started = time.perf_counter()
                    result = run(spec, lm=lm, data=data).to_json()
                    wall = time.perf_counter() - started
                    # the found prompt's per-example test scores (fp32), read while its run folder exists
                    scored = Evaluator(lm, data.task).score(load_prompt(Path(result["run_dir"]) / "prompt.json"),
                                                            data.test)
                    pair[dtype] = {"wall_s": wall, "result": result, "test": scored}
            a, b = pair["fp32"]["result"], pair["bf16"]["result"]
            delta = bootstrap_delta(pair["bf16"]["test"], pair["fp32"]["test"], seed=0)
            rows.append({"seed": seed, "strategy": strategy, "params": params, "budget": budget,
                         "wall_s": {"fp32": round(pair["fp32"]["wall_s"], 1), "bf16": round(pair["bf16"]["wall_s"], 1)},
                         "speedup": pair["fp32"]["wall_s"] / pair["bf16"]["wall_s"],
                         "same_gate": bool(a["selection"].get("reliable")) == bool(b["selection"].get("reliable")),
                         "same_prompt": a["prompt_fingerprint"] == b["prompt_fingerprint"],
                         "test": {"fp32": a["scores"]["test"], "bf16": b["scores"]["test"]},
                         "manual_test": a["baseline"]["test"],
                         "test_delta_bf16_minus_fp32": delta["delta"], "paired_se": delta["se"],
                         "within_one_se": delta["delta"] >= -delta["se"]})
            print(f"  seed {seed} {strategy}: {rows[-1]['wall_s']} speedup {rows[-1]['speedup']:.2f}, "
                  f"test {a['scores']['test']:.4f} / {b['scores']['test']:.4f}, same gate {rows[-1]['same_gate']}",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 13, fewer candidates, gradient only (< 10 min)")
    parser.add_argument("--seeds", default="13")
    parser.add_argument("--out", default=str(RESULTS / "precision.json"))
    parser.add_argument("--strategies", default="gradient,auto", help="the searches timed: gradient, auto or both")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    lm = load_model("smollm2-135m")
    data = load_task("sst2", None, 16, 13, lm.name)
    peak = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak, {threads} threads: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f}",
          flush=True)
    examples = data.test[: 128 if args.quick else 872]
    rates = {dtype: evaluator_rate(lm, data, examples, dtype) for dtype in ("fp32", "bf16")}
    for dtype, r in rates.items():
        print(f"evaluator {dtype}: {r['examples_per_s']:.1f} ex/s, {r['flops_real'] / peak[dtype]:.0%} of the "
              f"{dtype} peak ({r['flops_padded'] / peak[dtype]:.0%} counting padding)", flush=True)
    sets = candidate_sets(lm, data, 3 if args.quick else 6, 16)
    rescore = rescoring(lm, data, sets)
    print(f"re-scoring: {rescore['candidates_per_s']}, speedup {rescore['speedup']:.2f}, "
          f"tau {rescore['kendall_tau']:.3f} {rescore['kendall_tau_per_step']}", flush=True)
    wanted = {s.strip() for s in args.strategies.split(",")}
    plan: list[tuple[str, dict[str, Any], int | None]] = []
    if "gradient" in wanted:
        plan.append(("gradient", {"num_candidates": 8, "rescore_examples": 16}, 600 if args.quick else 3000))
    if "auto" in wanted and not args.quick:
        plan.append(("auto", {"auto.effort": "light"}, None))
    seeds = [13] if args.quick else [int(s) for s in args.seeds.split(",")]
    runs = searches(lm, seeds, plan)
    wall = {d: sum(r["wall_s"][d] for r in runs) for d in ("fp32", "bf16")}
    summary = {
        "speedup": wall["fp32"] / wall["bf16"], "kendall_tau": rescore["kendall_tau"],
        "same_gate": all(r["same_gate"] for r in runs),
        "test_within_one_paired_se": all(r["within_one_se"] for r in runs),
        "quick": args.quick, "threads": threads, "model": lm.name, "cpu_bf16_native": native_bf16("cpu"),
        "cpu_flags": sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx")),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "matmul_peak_flops": peak, "evaluator": rates, "evaluator_speedup":
            rates["fp32"]["seconds"] / rates["bf16"]["seconds"],
        "rescoring": rescore, "searches": runs, "versions": versions(),
        "command": "python benchmarks/precision.py " + " ".join(sys.argv[1:]),
    }
    atomic_write_json(Path(args.out), summary)
    print(f"speedup {summary['speedup']:.2f}, kendall_tau {summary['kendall_tau']:.3f}, "
          f"same_gate {summary['same_gate']} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
