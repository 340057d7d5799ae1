"""Choose the selection protocol's defaults (calibration, ``fluency``, ``min_gain``) on data no reported figure uses.

Held-out splits: 16-shot train/dev pairs (16 per class each) sampled, seeded, from SST-2's 67k-row
GLUE *train* file, leaving out every sentence of every LM-BFF split; each is scored on 600 other
GLUE train rows of at least 6 words (the test set, GLUE dev, is disjoint from train). Never the
LM-BFF seeds that `generalisation.py` reports, never the test set.

* ``--part calibration``: the manual prompt and LM-BFF's cloze prompt under each calibration
  (``prior`` estimated on the split's 32 train inputs), held-out accuracy.
* ``--part gradient``: one `gradient` search per (split, grid point); the held-out accuracy of what
  each ``min_gain`` would report is read off the same run (the gate's inputs do not depend on it).

    python benchmarks/selection_defaults.py --part calibration --splits 1,2,3
    python benchmarks/selection_defaults.py --part gradient --splits 1,2 --grid "fluency=0,0.1,0.5"

Prints and writes ``benchmarks/results/selection_defaults_<part>.json``; finished runs under
``--out`` are reused, so it resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
from pathlib import Path

import torch

from autoprompt import Evaluator, Prompt, TaskData, load_model, load_task, prompt_from_json
from autoprompt.io import atomic_write_json
from autoprompt.search import SearchSpec, finished_result, run_search
from autoprompt.tasks import LMBFF_SEEDS, Example
from autoprompt.tasks.base import resolve_data_dir
from autoprompt.tasks.readers import read_tsv

RESULTS = Path(__file__).parent / "results"
CLOZE = Prompt("{sentence} It was [P]", {"negative": ["terrible"], "positive": ["great"]})  # LM-BFF's SST-2 prompt
MIN_GAINS = (0.0, 0.5, 1.0, 2.0)


def held_out_splits(seeds: list[int], shots: int = 16, n_eval: int = 600) -> dict[int, TaskData]:
    """Per seed: a class-balanced k-shot train and dev from GLUE SST-2 train, plus ``n_eval`` other rows
    as the split's "test" (here: the held-out scoring set)."""
    root = resolve_data_dir(None)
    lmbff = {ex.fields["sentence"].strip().lower() for s in LMBFF_SEEDS
             for split in ("train", "dev") for ex in getattr(load_task("sst2", None, 16, s), split)}
    rows = [(r["sentence"], int(r["label"])) for r in read_tsv(root / "sst2/glue/train.tsv")
            if r["sentence"].strip().lower() not in lmbff]
    task = load_task("sst2", None, 16, 13).task
    out = {}
    for seed in seeds:
        rng = random.Random(f"selection-defaults:{seed}")
        by_class = {c: rng.sample([r for r in rows if r[1] == c], 2 * shots) for c in (0, 1)}
        train = [Example({"sentence": t}, c) for c in (0, 1) for t, _ in by_class[c][:shots]]
        dev = [Example({"sentence": t}, c) for c in (0, 1) for t, _ in by_class[c][shots:]]
        used = {t for c in (0, 1) for t, _ in by_class[c]}
        pool = [r for r in rows if r[0] not in used and len(r[0].split()) >= 6]
        test = [Example({"sentence": t}, c) for t, c in random.Random(f"eval:{seed}").sample(pool, n_eval)]
        splits = {"train": train, "dev": dev, "test": test}
        out[seed] = TaskData(task, {"shots": shots, "data_seed": f"glue-train-{seed}",
                                    "sources": {"all": "sst2/glue/train.tsv, held-out sample"}},
                             {k: (lambda v=v: v) for k, v in splits.items()})
    return out


def part_calibration(lm, splits: dict[int, TaskData]) -> dict:
    rows = []
    for seed, data in splits.items():
        ev = Evaluator(lm, data.task)
        for name, prompt in (("manual", data.task.default_prompt), ("cloze", CLOZE)):
            for method in ("none", "contextual", "prior"):
                chosen = ev.calibrate([prompt], method, data.train)[0]
                rows.append({"split": seed, "prompt": name, "calibration": method,
                             "held_out": round(ev.score(chosen, data.test).score, 4)})
                print(json.dumps(rows[-1]), flush=True)
    summary = {f"{p}/{m}": round(statistics.mean(r["held_out"] for r in rows
                                                 if (r["prompt"], r["calibration"]) == (p, m)), 4)
               for p in ("manual", "cloze") for m in ("none", "contextual", "prior")}
    return {"rows": rows, "mean": summary}


def part_search(lm, splits: dict[int, TaskData], strategy: str, grid: dict[str, list[str]], out: str,
                budget: int | None) -> dict:
    rows = []
    names = list(grid)
    for values in itertools.product(*grid.values()):
        params = dict(zip(names, values, strict=True))
        for seed, data in splits.items():
            spec = SearchSpec(task="sst2", strategy=strategy, params=dict(params), shots=16, data_seed=seed,
                              seed=0, budget=budget, out=out)
            r = finished_result(spec) or run_search(spec, lm=lm, data=data).to_json()
            sel = r["selection"]
            ev = Evaluator(lm, data.task)
            manual = ev.score(data.task.default_prompt, data.test).score
            best = next(c for c in sel["candidates"] if c["fingerprint"] == sel["best_fingerprint"])
            best_score = ev.score(prompt_from_json(best["prompt"]), data.test).score
            gated = {str(m): round(best_score if sel["gain"] > 0 and sel["gain"] > m * sel["se"] else manual, 4)
                     for m in MIN_GAINS}
            rows.append({"split": seed, "params": params, "manual": round(manual, 4), "best": round(best_score, 4),
                         "gain": sel["gain"], "se": sel["se"], "held_out_by_min_gain": gated,
                         "steps": r["steps"], "wall_s": r["wall_s"], "torch_threads": torch.get_num_threads(),
                         "run_dir": r["run_dir"]})
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for values in itertools.product(*grid.values()):
        params = dict(zip(names, values, strict=True))
        mine = [r for r in rows if r["params"] == params]
        key = ",".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        summary[key] = {"manual": round(statistics.mean(r["manual"] for r in mine), 4),
                        "best_ungated": round(statistics.mean(r["best"] for r in mine), 4),
                        **{f"min_gain={m}": round(statistics.mean(r["held_out_by_min_gain"][str(m)] for r in mine), 4)
                           for m in MIN_GAINS}}
    return {"rows": rows, "mean": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["calibration", "gradient", "verbalizer", "paraphrase"], required=True)
    parser.add_argument("--splits", default="1,2")
    parser.add_argument("--grid", default="", help='e.g. "fluency=0,0.1;calibration=none,contextual"')
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--out", default="runs-defaults")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    splits = held_out_splits([int(s) for s in args.splits.split(",")])
    if args.part == "calibration":
        report = part_calibration(lm, splits)
    else:
        grid = {k: v.split(",") for k, v in (item.split("=", 1) for item in args.grid.split(";") if item)}
        report = part_search(lm, splits, args.part, grid, args.out, args.budget)
    report.update({"model": lm.name, "splits": list(splits), "torch_threads": torch.get_num_threads()})
    print(json.dumps(report["mean"], indent=2))
    atomic_write_json(RESULTS / f"selection_defaults_{args.part}.json", report)


if __name__ == "__main__":
    main()
