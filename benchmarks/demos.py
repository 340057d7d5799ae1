"""In-context demonstrations on smollm2-135m: each `demos` method vs the manual zero-shot prompt, and the
speed of shared-cache scoring vs scoring every full text.

For each (task, seed, method, calibration) a `demos` search runs under the core's protocol (the
manual prompt competes in the gate); the found and the manual prompt from the same run are scored on
test (``--test-limit`` takes a seeded class-stratified sample, recorded). Then, side by side in one
process, one prompt with ``--speed-demos`` demonstrations is scored on ``--speed-n`` test examples
with the demonstration block's cache shared and with every full text run (``shared_prefix=False``);
the two must agree to 1e-4.

    python benchmarks/demos.py --tasks sst2 --seeds 13 --methods random,similar --calibrations prior
    python benchmarks/demos.py --tasks sst2,rte,trec,agnews --seeds 13,21,42 --calibrations none,prior

Prints one JSON line per run and writes ``benchmarks/results/demos.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from autoprompt import Demonstration, Demonstrations, Evaluator, load_model, load_task
from autoprompt.io import atomic_write_json
from autoprompt.search import SearchSpec, limit_test, run_search

RESULTS = Path(__file__).parent / "results"


def speed(lm, task: str, seed: int, n_demos: int, n: int) -> dict:
    data = load_task(task, shots=16, data_seed=seed)
    demos = Demonstrations(tuple(Demonstration(ex.fields, data.task.labels[ex.label]) for ex in data.train[:n_demos]))
    prompt = data.task.default_prompt.with_demos(demos)
    examples = data.test[:n]
    timings, scores = {}, {}
    for name, shared in (("shared", True), ("full_text", False)):
        evaluator = Evaluator(lm, data.task, shared_prefix=shared, cache=False)
        start = time.perf_counter()
        scores[name] = evaluator.score(prompt, examples).logprobs
        timings[name] = time.perf_counter() - start
    tokens = sum(len(lm.encode(prompt, ex)) for ex in examples)
    diff = float((scores["shared"] - scores["full_text"]).abs().max())
    if diff > 1e-4:  # a faster path that scores differently is not a speed-up
        raise SystemExit(f"shared-cache and full-text scores differ by {diff:.2e} on {task}")
    return {"task": task, "demonstrations": n_demos, "n": n, "tokens": tokens,
            "shared_s": round(timings["shared"], 2), "full_text_s": round(timings["full_text"], 2),
            "speedup": round(timings["full_text"] / timings["shared"], 2),
            "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--seeds", default="13")
    parser.add_argument("--methods", default="random,similar,search")
    parser.add_argument("--calibrations", default="none,prior")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--speed-demos", type=int, default=8)
    parser.add_argument("--speed-n", type=int, default=64)
    parser.add_argument("--out", default="runs-demos")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    rows, runs = [], []
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            for calibration in args.calibrations.split(","):
                found, manual, tokens, walls = [], [], [], []
                for seed in map(int, args.seeds.split(",")):
                    data = load_task(task, shots=16, data_seed=seed)
                    if args.test_limit:
                        data = limit_test(data, args.test_limit)
                    spec = SearchSpec(task=task, strategy="demos", shots=16, data_seed=seed, out=args.out,
                                      params={"method": method, "calibration": calibration})
                    result = run_search(spec, lm=lm, data=data)
                    run = {"task": task, "method": method, "calibration": calibration, "data_seed": seed,
                           "found_test": result["scores"]["test"], "manual_test": result["baseline"]["test"],
                           "reliable": result["selection"].get("reliable"), "tokens": result["budget"]["tokens"],
                           "forwards": result["budget"]["used"], "wall_s": result["wall_s"],
                           "test_n": result["split_sizes"]["test"], "torch_threads": torch.get_num_threads()}
                    print(json.dumps(run), flush=True)
                    runs.append(run)
                    found.append(run["found_test"])
                    manual.append(run["manual_test"])
                    tokens.append(run["tokens"])
                    walls.append(run["wall_s"])
                rows.append({"task": task, "method": method, "calibration": calibration,
                             "found_test_mean": round(statistics.mean(found), 4),
                             "found_test_std": round(statistics.pstdev(found), 4),
                             "manual_test_mean": round(statistics.mean(manual), 4),
                             "tokens_mean": round(statistics.mean(tokens)),
                             "wall_s_mean": round(statistics.mean(walls), 1)})
    seed = int(args.seeds.split(",")[0])
    timing = [speed(lm, task, seed, args.speed_demos, args.speed_n) for task in args.tasks.split(",")]
    for t in timing:
        print(json.dumps(t), flush=True)
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "demos.json", {"model": lm.name, "torch_threads": torch.get_num_threads(),
                                               "command": "python benchmarks/demos.py " + " ".join(
                                                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                                               "rows": rows, "runs": runs, "speed": timing})


if __name__ == "__main__":
    main()
