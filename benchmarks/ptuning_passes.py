"""Seconds per ``ptuning`` optimiser step by pass size and precision, side by side in one process.

A training batch is cut into passes of at most ``pass_tokens`` input tokens (the same update, less
memory: `searchers/continuous/passes.py`). Small passes cost speed, and more so in bf16, whose
matmuls need more rows to pay off. This times one search step (``eval_every`` optimiser steps of
P-tuning on 16-shot SST-2 train, seed 13, smollm2-135m, and its dev evaluation on 8 dev examples)
for each pass size in fp32 and bf16, ``--repeats`` times interleaved, and prints the process's
peak RSS so far after each (``ru_maxrss`` only grows: read the first row of each precision).
It is where the ``pass_tokens`` defaults come from (128 in fp32 for memory, 512 in bf16 for speed);
no accuracy is read.

    python benchmarks/ptuning_passes.py [--sizes 128,256,512,4096] [--repeats 2]

Writes ``benchmarks/results/ptuning_passes.json``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from autoprompt import Budget, Evaluator, load_model, load_task
from autoprompt.io import atomic_write_json
from autoprompt.results.versions import versions
from autoprompt.search import SearchContext, create

RESULTS = Path(__file__).parent / "results"
OPTIMISER_STEPS = 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="128,256,512,4096")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    data = load_task("sst2", None, 16, 13, lm.name)
    sizes = [int(s) for s in args.sizes.split(",")]
    seconds: dict[str, list[float]] = {}
    rows = []
    for repeat in range(args.repeats):
        for dtype in ("fp32", "bf16"):
            for size in sizes:
                searcher = create("ptuning", {"mode": "ptuning", "pass_tokens": size,
                                              "eval_every": OPTIMISER_STEPS, "steps": 150})
                budget = Budget(None)
                ctx = SearchContext(lm, data.task, data.train, data.dev[:8], Evaluator(lm, data.task, budget=budget),
                                    budget, 0)
                with lm.computing_in(dtype):
                    state = searcher.start(ctx)
                    started = time.perf_counter()
                    searcher.step(ctx, state)
                    per_step = (time.perf_counter() - started) / OPTIMISER_STEPS
                seconds.setdefault(f"{dtype} {size}", []).append(per_step)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
                rows.append({"repeat": repeat, "dtype": dtype, "pass_tokens": size,
                             "s_per_optimiser_step": round(per_step, 3), "peak_rss_so_far_mib": rss})
                print(rows[-1], flush=True)
    summary = {key: round(statistics.mean(v), 3) for key, v in seconds.items()}
    print(summary)
    atomic_write_json(RESULTS / "ptuning_passes.json", {
        "model": lm.name, "task": "sst2 16-shot seed 13", "torch_threads": torch.get_num_threads(),
        "optimiser_steps_timed": OPTIMISER_STEPS, "s_per_optimiser_step_mean": summary, "rows": rows,
        "versions": versions(), "command": "python benchmarks/ptuning_passes.py "
        f"--sizes {args.sizes} --repeats {args.repeats}"})


if __name__ == "__main__":
    main()
