"""P-tuning v2's multi-task prefix: one prefix trained on SST-2 + MR + CR (alone, or with a small
per-task part: ``task_tokens`` positions per member) vs one prefix per task.

Each row is a normal search (``autoprompt search --task sst2,mr,cr --shots 16 --strategy prefix``
and ``--task sst2`` etc.), ``gate=false`` so the figure is the trained prefix itself; each task is
scored on its own test next to its own manual prompt. Finished runs under ``--out`` are reused.
Prints and writes ``benchmarks/results/multitask.json``.

    python benchmarks/multitask.py --tasks sst2,mr,cr --seeds 13,21,42 --test-limit 500
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from figures import mean_std

from autoprompt import load_model
from autoprompt.io import atomic_write_json, read_json
from autoprompt.search import SearchSpec, finished_result, run_search

RESULTS = Path(__file__).parent / "results" / "multitask.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,mr,cr")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--test-limit", type=int, default=None, help="a seeded K of each task's test")
    parser.add_argument("--task-tokens", type=int, default=2,
                        help="per-task prefix positions of the 'multi-task+own' setup (0: skip that setup)")
    parser.add_argument("--out", default="runs-bench/multitask")
    parser.add_argument("--rerun", action="store_true", help="re-run rows already in the results file")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    known = {(r["setup"], r["task"], r["data_seed"]): r for r in (read_json(RESULTS)["rows"] if RESULTS.exists()
                                                                  else [])}
    names = args.tasks.split(",")

    def measured(setup: str, tasks: list[str], seed: int) -> bool:
        # rows already in the results file are kept (their run folders may be gone); --rerun measures them again
        return not args.rerun and all((setup, name, seed) in known for name in tasks)

    def run(task: str, seed: int, **params: int) -> dict:
        spec = SearchSpec(task=task, strategy="prefix", params={"gate": False, **params}, shots=16, data_seed=seed,
                          seed=0, out=args.out, test_limit=args.test_limit)
        return finished_result(spec) or run_search(spec, lm=lm, progress=True).to_json()

    for seed in [int(s) for s in args.seeds.split(",")]:
        joints = {}
        if not measured("multi-task", names, seed):
            joints["multi-task"] = run(args.tasks, seed)
        if args.task_tokens and not measured("multi-task+own", names, seed):
            joints["multi-task+own"] = run(args.tasks, seed, task_tokens=args.task_tokens)
        for setup, joint in joints.items():
            for name, member in joint["members"].items():
                known[(setup, name, seed)] = {
                    "setup": setup, "task": name, "data_seed": seed, "test": round(member["test"], 4),
                    "manual_test": round(member["manual_test"], 4), "n": member["n"], "wall_s": joint["wall_s"],
                    "trainable_parameters": joint["details"]["trainable_parameters"],
                    "own_parameters": joint["details"].get("task_parameters", {}).get(name, 0),
                    "torch_threads": torch.get_num_threads()}
        for name in names:
            if measured("per-task", [name], seed):
                continue
            single = run(name, seed)
            known[("per-task", name, seed)] = {
                "setup": "per-task", "task": name, "data_seed": seed, "test": round(single["scores"]["test"], 4),
                "manual_test": round(single["baseline"]["test"], 4), "n": single["split_sizes"]["test"],
                "wall_s": single["wall_s"], "trainable_parameters": single["details"]["trainable_parameters"],
                "torch_threads": torch.get_num_threads()}
        rows = sorted(known.values(), key=lambda r: (r["setup"], r["task"], r["data_seed"]))
        atomic_write_json(RESULTS, {"model": "smollm2-135m", "strategy": "prefix", "shots": 16,
                                    "command": f"python benchmarks/multitask.py --tasks {args.tasks} --seeds "
                                               f"{args.seeds} --task-tokens {args.task_tokens}"
                                               + (f" --test-limit {args.test_limit}" if args.test_limit else ""),
                                    "rows": rows, "summary": summary(rows)})
        print(json.dumps(summary(rows), indent=1), flush=True)


def summary(rows: list[dict]) -> list[dict]:
    """Mean ± sample std over data seeds per (setup, task), with the manual prompt of the same runs."""
    out = []
    for setup in ("multi-task", "multi-task+own", "per-task"):
        for task in sorted({r["task"] for r in rows}):
            sel = [r for r in rows if r["setup"] == setup and r["task"] == task]
            if not sel:
                continue

            def ms(key: str, sel: list[dict] = sel) -> str:
                return mean_std((r[key] for r in sel), 4)

            out.append({"setup": setup, "task": task, "seeds": len(sel), "test": ms("test"),
                        "manual_test": ms("manual_test"), "wall_s": round(statistics.mean(r["wall_s"] for r in sel))})
    return out


if __name__ == "__main__":
    main()
