"""Each model's manual prompt on each task's test split: the zero-shot baseline every search must beat.

The manual prompt is the one chosen on train for that model (`autoprompt.tasks.builtin.MODEL_PROMPTS`),
scored with and without contextual calibration.

    python benchmarks/manual_baselines.py [--models smollm2-135m,gemma3-270m] [--tasks sst2,rte,trec,agnews]
        [--limit 1000]

``--limit`` caps a test split with a seeded class-stratified sample (AG News has 7,600). Writes
``benchmarks/results/manual_baselines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from autoprompt.api import evaluate
from autoprompt.io import atomic_write_json
from autoprompt.results.versions import versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--tasks", default="sst2,rte,trec,agnews")
    parser.add_argument("--limit", type=int, default=1000, help="largest test sample per task")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "manual_baselines.json"))
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        for task in args.tasks.split(","):
            for calibration in ("none", "contextual"):
                start = time.perf_counter()
                out = evaluate(task, model=model, split="test", limit=args.limit, calibration=calibration,
                               data_dir=os.environ.get("AUTOPROMPT_DATA_DIR"))
                row = {"model": model, "task": task, "calibration": calibration, "n": out["n"],
                       "score": round(out["score"], 4), "template": out["template"],
                       "verbalizer": out["verbalizer"], "manual_prompt": out["protocol"].get("manual_prompt",
                                                                                             "the default"),
                       "wall_s": round(time.perf_counter() - start, 1), "torch_threads": torch.get_num_threads()}
                rows.append(row)
                print(json.dumps(row), flush=True)
    atomic_write_json(args.out, {"rows": rows, "versions": versions(), "command": " ".join(
        ["python benchmarks/manual_baselines.py", f"--models {args.models}", f"--tasks {args.tasks}",
         f"--limit {args.limit}"])})


if __name__ == "__main__":
    main()
