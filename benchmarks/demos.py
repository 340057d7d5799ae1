"""In-context demonstrations on smollm2-135m: each `demos` method vs the manual zero-shot prompt, and the
speed of shared-cache scoring vs scoring every full text.

For each (task, seed, method, calibration) a `demos` search runs under the core's protocol (the
manual prompt competes in the gate). Three prompts of the same run are scored on test: the one the run
hands back (``found``), the method's own best candidate whether or not the gate kept it (``method``), and
the manual prompt (``--test-limit`` takes a seeded random sample of test, recorded). Then, side by side in one
process, one prompt with ``--speed-demos`` demonstrations is scored on ``--speed-n`` test examples
with the demonstration block's cache shared and with every full text run (``shared_prefix=False``);
the two must agree to 1e-4.

    python benchmarks/demos.py --tasks sst2 --seeds 13 --methods random,similar --calibrations prior
    python benchmarks/demos.py --tasks sst2,rte,trec,agnews --seeds 13,21,42 --calibrations none,prior

Prints one JSON line per run, appends it to ``benchmarks/results/demos_runs.jsonl`` (a rerun skips the
runs already there) and writes the summary over all of them to ``benchmarks/results/demos.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from figures import sample_std

from autoprompt import Demonstration, Demonstrations, Evaluator, Prompt, load_model, load_task
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


def rerun_command(run: dict, test_limit: int | None) -> str:
    """The command that measures this one run again (after removing its line from the log)."""
    limit = f" --test-limit {test_limit}" if test_limit else ""
    return (f"python benchmarks/demos.py --tasks {run['task']} --seeds {run['data_seed']} --methods {run['method']}"
            f" --calibrations {run['calibration']}{limit} --skip-speed")


def summarize(runs: list[dict]) -> list[dict]:
    """Mean ± sample std over data seeds per (task, method, calibration, test sample)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["task"], run["method"], run["calibration"], run["test_n"]), []).append(run)
    rows = []
    for (task, method, calibration, test_n), group in sorted(groups.items()):
        found = [r["found_test"] for r in group]
        own = [r["method_test"] for r in group]
        manual = [r["manual_test"] for r in group]
        rows.append({"task": task, "method": method, "calibration": calibration, "test_n": test_n,
                     "seeds": sorted(r["data_seed"] for r in group),
                     "found_test_mean": round(statistics.mean(found), 4),
                     "found_test_std": round(sample_std(found), 4),
                     "method_test_mean": round(statistics.mean(own), 4),
                     "method_test_std": round(sample_std(own), 4),
                     "manual_test_mean": round(statistics.mean(manual), 4),
                     "reliable": sum(bool(r["reliable"]) for r in group),
                     "tokens_mean": round(statistics.mean(r["tokens"] for r in group)),
                     "wall_s_mean": round(statistics.mean(r["wall_s"] for r in group), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--seeds", default="13")
    parser.add_argument("--methods", default="random,similar,search")
    parser.add_argument("--calibrations", default="none,prior")
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--speed-demos", type=int, default=8)
    parser.add_argument("--speed-n", type=int, default=64)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--out", default="runs-demos")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    RESULTS.mkdir(exist_ok=True)
    log = RESULTS / "demos_runs.jsonl"  # one line per finished run: an interrupted benchmark resumes
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    finished = {(r["task"], r["method"], r["calibration"], r["data_seed"], r["test_n"]) for r in done}
    for task in args.tasks.split(","):
        for method in args.methods.split(","):
            for calibration in args.calibrations.split(","):
                for seed in map(int, args.seeds.split(",")):
                    data = load_task(task, shots=16, data_seed=seed)
                    if args.test_limit:
                        data = limit_test(data, args.test_limit)
                    if (task, method, calibration, seed, len(data.test)) in finished:
                        continue
                    spec = SearchSpec(task=task, strategy="demos", shots=16, data_seed=seed, out=args.out,
                                      params={"method": method, "calibration": calibration})
                    result = run_search(spec, lm=lm, data=data).to_json()
                    # what the method itself does on test, whether or not the gate handed it back
                    found = [c for c in result["selection"]["candidates"] if not c["manual"]]
                    best = max(found, key=lambda c: c["objective"])
                    method_test = (result["scores"]["test"]  # the run scored it on test already
                                   if best["fingerprint"] == result["selection"]["chosen_fingerprint"]
                                   else Evaluator(lm, data.task).score(Prompt.from_json(best["prompt"]),
                                                                       data.test).score)
                    run = {"task": task, "method": method, "calibration": calibration, "data_seed": seed,
                           "found_test": result["scores"]["test"], "manual_test": result["baseline"]["test"],
                           "method_test": method_test, "reliable": result["selection"].get("reliable"),
                           "tokens": result["budget"]["tokens"],
                           "forwards": result["budget"]["used"], "wall_s": result["wall_s"],
                           "test_n": result["split_sizes"]["test"], "torch_threads": torch.get_num_threads()}
                    run["command"] = rerun_command(run, args.test_limit)
                    print(json.dumps(run), flush=True)
                    with log.open("a") as f:
                        f.write(json.dumps(run) + "\n")
                    done.append(run)
    out = RESULTS / "demos.json"
    timing = json.loads(out.read_text()).get("speed", []) if out.exists() else []
    if not args.skip_speed:
        seed = int(args.seeds.split(",")[0])
        timing = [speed(lm, task, seed, args.speed_demos, args.speed_n) for task in args.tasks.split(",")]
        for t in timing:
            print(json.dumps(t), flush=True)
    # the summary spans runs from many invocations: each run names the command that reruns it alone
    atomic_write_json(out, {"model": lm.name, "torch_threads": torch.get_num_threads(),
                            "invocation": "python " + shlex.join(sys.argv),
                            "rows": summarize(done), "runs": done, "speed": timing})


if __name__ == "__main__":
    main()
