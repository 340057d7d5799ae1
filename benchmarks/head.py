"""P-tuning v2's classification head (``head=linear``) vs the verbalizer, SST-2 16-shot, smollm2-135m.

Each row is a normal search (``autoprompt search --task sst2 --shots 16 --strategy prefix --param
head=linear``) with ``gate=false``, so the figure is the trained prompt itself (``gate_passed`` says
whether the core's gate would have kept the manual prompt); the manual row is the same run's
baseline. Finished runs under ``--out`` are reused. Prints and writes ``benchmarks/results/head.json``.

    python benchmarks/head.py --seeds 13,21,42 --variants verbalizer,linear,linear-words
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from figures import mean_std

from autoprompt import load_model
from autoprompt.io import atomic_write_json, read_json
from autoprompt.search import SearchSpec, finished_result, run_search

RESULTS = Path(__file__).parent / "results" / "head.json"
VARIANTS = {"verbalizer": {"head": "verbalizer"}, "linear": {"head": "linear"},
            "linear-words": {"head": "linear", "head_init": "words"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--strategy", default="prefix")
    parser.add_argument("--variants", default="verbalizer,linear,linear-words")
    parser.add_argument("--out", default="runs-bench/head")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    known = {(r["variant"], r["data_seed"]): r for r in (read_json(RESULTS)["rows"] if RESULTS.exists() else [])}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in args.variants.split(","):
            spec = SearchSpec(task=args.task, strategy=args.strategy, params={**VARIANTS[name], "gate": False},
                              shots=16, data_seed=seed, seed=0, out=args.out)
            r = finished_result(spec) or run_search(spec, lm=lm, progress=True).to_json()
            row = {"variant": name, "data_seed": seed, "test": round(r["scores"]["test"], 4),
                   "manual_test": round(r["baseline"]["test"], 4), "dev": round(r["scores"]["dev"], 4),
                   "gate_passed": r["selection"]["reliable"],
                   "trainable_parameters": r["details"]["trainable_parameters"],
                   "head_parameters": r["details"].get("head_parameters", 0), "wall_s": r["wall_s"],
                   "torch_threads": torch.get_num_threads(), "run_dir": r["run_dir"]}
            known[(name, seed)] = row
            print(json.dumps(row), flush=True)
            rows = sorted(known.values(), key=lambda x: (x["variant"], x["data_seed"]))
            atomic_write_json(RESULTS, {"task": args.task, "strategy": args.strategy, "model": "smollm2-135m",
                                        "command": f"python benchmarks/head.py --task {args.task} --seeds {args.seeds}"
                                                   f" --strategy {args.strategy} --variants {args.variants}",
                                        "rows": rows, "summary": summary(rows)})
    for line in summary(list(known.values())):
        print(line)


def summary(rows: list[dict]) -> list[dict]:
    """Mean ± sample std over data seeds per variant, next to the manual prompt of the same runs."""
    out = []
    for name in sorted({r["variant"] for r in rows}):
        sel = [r for r in rows if r["variant"] == name]

        def ms(key: str, sel: list[dict] = sel) -> str:
            return mean_std((r[key] for r in sel), 4)

        out.append({"variant": name, "seeds": len(sel), "test": ms("test"), "manual_test": ms("manual_test"),
                    "gate_passed": sum(bool(r["gate_passed"]) for r in sel),
                    "trainable_parameters": sel[0]["trainable_parameters"],
                    "head_parameters": sel[0]["head_parameters"]})
    return out


if __name__ == "__main__":
    main()
