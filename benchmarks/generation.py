"""E2E table-to-text on smollm2-135m: the manual prompt vs prefix-tuning vs prompt tuning, low-data.

Every run is a normal search (``autoprompt search --task e2e --shots N --strategy S``) with
``gate=false``, so the figure is the method's own trained prompt (whether the core's gate would
have kept the manual prompt is recorded as ``gate_passed``); finished runs under ``--out`` are
reused. The manual row is the same run's baseline on the same test MRs. Per row: test BLEU and
ROUGE-L against every reference (``sacrebleu``, ``rouge-score``), the trainable parameters, the
training loop's time (with its dev decoding) and greedy decoding time per test input. Prints and
writes ``benchmarks/results/generation.json`` (rows merged by key, so a stopped run resumes).

    python benchmarks/generation.py --sizes 50,100,500 --seeds 13,21,42 --methods prefix,prompt_tuning

``--test-limit K`` scores a seeded K of the 630 test MRs (all their references); the figure says so.
Use ``OMP_NUM_THREADS`` to fix the thread count (recorded per row).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from figures import mean_std

from autoprompt import Evaluator, load_model, load_prompt
from autoprompt.io import atomic_write_json, read_json
from autoprompt.search import SearchSpec, finished_result, run_search
from autoprompt.tasks import load_task

RESULTS = Path(__file__).parent / "results" / "generation.json"


def run_one(method: str, shots: int, seed: int, args: argparse.Namespace, lm) -> dict:
    params = {"gate": False, **({"steps": args.steps} if args.steps else {})}
    spec = SearchSpec(task="e2e", strategy=method, params=params, shots=shots, data_seed=seed, seed=0, out=args.out,
                      budget=args.budget, test_limit=args.test_limit)
    r = finished_result(spec) or run_search(spec, lm=lm, progress=True).to_json()
    trace = (Path(r["run_dir"]) / "trace.jsonl").read_text().splitlines()
    gen = r["generation"]
    return {"method": method, "shots": shots, "data_seed": seed,
            "test_bleu": round(r["scores"]["test"], 2), "manual_test_bleu": round(r["baseline"]["test"], 2),
            "test_rougeL": round(gen["found"]["rougeL"], 2), "manual_test_rougeL": round(gen["baseline"]["rougeL"], 2),
            "dev_bleu": round(r["scores"]["dev"], 2), "gate_passed": r["selection"]["reliable"],
            "delta_ci95": r["deltas"]["test"]["ci95"],
            "trainable_parameters": r["details"]["trainable_parameters"],
            "train_s": json.loads(trace[-1])["time_s"] if trace else 0.0,
            "decode_s_per_input": decode_time(r, lm, args.decode_n), "wall_s": r["wall_s"],
            "test_n": r["split_sizes"]["test"], "torch_threads": torch.get_num_threads(), "run_dir": r["run_dir"]}


def decode_time(result: dict, lm, n: int) -> float:
    """Seconds per input of greedy decoding with the found prompt on ``n`` test MRs (batched)."""
    data = load_task("e2e", None, result["shots"], result["data_seed"])
    prompt = load_prompt(Path(result["run_dir"]) / "prompt.json")
    scorer = Evaluator(lm, data.task, cache=False).generation
    assert scorer is not None
    start = time.perf_counter()
    scorer.generate(prompt, data.test[:n])
    return round((time.perf_counter() - start) / n, 4)


def summary(rows: list[dict]) -> list[dict]:
    """Mean ± sample std over data seeds per (shots, method), with the manual prompt's of the same runs."""
    out = []
    for shots in sorted({r["shots"] for r in rows}):
        for method in sorted({r["method"] for r in rows}):
            sel = [r for r in rows if r["shots"] == shots and r["method"] == method]
            if not sel:
                continue

            def ms(key: str, sel: list[dict] = sel) -> str:
                return mean_std((r[key] for r in sel), 2)

            out.append({"shots": shots, "method": method, "seeds": len(sel), "test_bleu": ms("test_bleu"),
                        "manual_test_bleu": ms("manual_test_bleu"), "test_rougeL": ms("test_rougeL"),
                        "manual_test_rougeL": ms("manual_test_rougeL"),
                        "gate_passed": sum(bool(r["gate_passed"]) for r in sel),
                        "trainable_parameters": sel[0]["trainable_parameters"],
                        "train_s": round(statistics.mean(r["train_s"] for r in sel), 1),
                        "decode_s_per_input": round(statistics.mean(r["decode_s_per_input"] for r in sel), 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="50,100,500")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--methods", default="prefix,prompt_tuning")
    parser.add_argument("--test-limit", type=int, default=None, help="a seeded K of the 630 test MRs")
    parser.add_argument("--budget", type=int, default=50_000, help="example-forwards; the steps end the training")
    parser.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the strategy's)")
    parser.add_argument("--decode-n", type=int, default=32, help="test MRs the decoding time is taken on")
    parser.add_argument("--out", default="runs-bench/generation")
    parser.add_argument("--rerun", action="store_true", help="re-run rows already in the results file")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    known = {(r["method"], r["shots"], r["data_seed"], r["test_n"]): r
             for r in (read_json(RESULTS).get("rows", []) if RESULTS.exists() else [])}
    for shots in [int(s) for s in args.sizes.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                if not args.rerun and (method, shots, seed, args.test_limit or 630) in known:
                    continue  # a row already measured (its run folder may be gone); --rerun measures it again
                row = run_one(method, shots, seed, args, lm)
                known[(method, shots, seed, row["test_n"])] = row
                print(json.dumps(row), flush=True)
                rows = sorted(known.values(), key=lambda r: (r["shots"], r["method"], r["data_seed"]))
                atomic_write_json(RESULTS, {"model": "smollm2-135m", "command": "python benchmarks/generation.py "
                                            + " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}")
                                                       for k, v in vars(args).items() if v not in (None, False)),
                                            "rows": rows, "summary": summary(rows)})
    for line in summary(list(known.values())):
        print(line)


if __name__ == "__main__":
    main()
