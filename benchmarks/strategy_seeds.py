"""One strategy on a 16-shot task over LM-BFF's data seeds, default budget, smollm2-135m.

Prints and writes (``benchmarks/results/<strategy>_<task>[_<params>].json``) the test score of
the manual prompt vs the found prompt, the prompt, budget and wall time of each run.

    python benchmarks/strategy_seeds.py [--task sst2] [--strategy gradient] [--seeds 13,21,42,87,100]
    python benchmarks/strategy_seeds.py --task trec --strategy verbalizer --param method=petal --seeds 13,21,42
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from figures import sample_std

from autoprompt import load_model
from autoprompt.prompts import prompt_from_json
from autoprompt.search import SearchSpec, finished_result, run_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="13,21,42,87,100")
    parser.add_argument("--strategy", default="gradient")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--out", default="runs-benchmark")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    params = dict(p.split("=", 1) for p in args.param)
    rows = []
    for data_seed in map(int, args.seeds.split(",")):
        spec = SearchSpec(task=args.task, strategy=args.strategy, params=params, shots=16, data_seed=data_seed,
                          seed=0, budget=args.budget, out=args.out)
        r = finished_result(spec) or run_search(spec, lm=lm).to_json()
        rows.append({"data_seed": data_seed, "manual_test": r["baseline"]["test"], "found_test": r["scores"]["test"],
                     "manual_dev": r["baseline"]["dev"], "found_dev": r["scores"]["dev"], "prompt": r["prompt_text"],
                     "verbalizer": prompt_from_json(r["prompt"]).verbalizer.to_json(),
                     "members": [m["template"] for m in r["prompt"].get("ensemble", [])],
                     "weights": r["prompt"].get("weights"),
                     "triggers": r["triggers"], "budget": r["budget"]["used"], "steps": r["steps"],
                     "wall_s": r["wall_s"], "run_dir": r["run_dir"]})
        print(json.dumps(rows[-1]), flush=True)
    summary = {key: round(statistics.mean(r[key] for r in rows), 4) for key in ("manual_test", "found_test", "wall_s")}
    summary["found_test_std"] = round(sample_std(r["found_test"] for r in rows), 4)
    report = {"task": f"{args.task} 16-shot", "strategy": args.strategy, "params": params, "model": "smollm2-135m",
              "runs": rows, "mean": summary}
    print(json.dumps(summary))
    suffix = "".join(f"_{k}-{v}" for k, v in sorted(params.items()))
    out = Path(__file__).parent / "results" / f"{args.strategy}_{args.task}{suffix}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
