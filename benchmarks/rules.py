"""Decision rules (issue 39): ``direct``, ``channel`` and ``centroid`` on the same prompts, side by side.

Two parts:

* ``--part heldout`` chooses the defaults (centroid distance and normalisation, channel length
  normalisation, whether ``auto`` tries a rule) on data no reported figure uses: the 16-shot
  train/dev pairs `compose.held_out_splits` samples from SST-2's and TREC's full train, leaving out
  every LM-BFF sentence, scored on 500 other train rows.
* ``--part report`` scores each rule variant on LM-BFF's 16-shot seeds and the full test sets
  (AG News: ``--test-limit`` seeded examples, said in the row): the manual prompt (and, for SST-2,
  LM-BFF's cloze template ``{sentence} It was [P]`` great/terrible), zero-shot and with one random
  train example per class shown in front (``--demos``), with and without ``prior`` calibration;
  test mean ± sample std over seeds, the gain over ``direct`` (same calibration) with its 95%
  paired-bootstrap interval per seed, and the cost per example (seconds, example-forwards).

    python benchmarks/rules.py --part heldout --tasks sst2,trec --splits 1,2
    python benchmarks/rules.py --part report --tasks sst2,sst2-cloze,trec,rte --seeds 13,21,42
    python benchmarks/rules.py --part report --tasks agnews --demos 0 --test-limit 1000 \
        --variants direct,channel,centroid
    python benchmarks/rules.py --part report --tasks sst2-found,trec-found,rte-found --demos 0

``<task>-found`` rows read the prompt `auto`'s demonstrations stage found on the same split (compose.py's
report runs), each rule fitted on the split's train.

Centroids and priors are fitted on the split's train (labels for the centroids, inputs for the
prior); test is read once per variant. Every finished cell goes to
``benchmarks/results/rules_<part>.jsonl`` and is skipped when the script runs again; the summary goes
to ``benchmarks/results/rules_<part>.json``. Figures: smollm2-135m, CPU; the thread count is recorded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compose import part_datasets
from figures import load_cells, mean_std

from autoprompt import TaskData, load_model
from autoprompt.io import atomic_write_json
from autoprompt.prompts import Demonstration, Demonstrations, Prompt, Rule, load_prompt
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search.selection import bootstrap_delta

RESULTS = Path(__file__).parent / "results"
CLOZE = ("{sentence} It was [P]", {"negative": ["terrible"], "positive": ["great"]})  # LM-BFF's SST-2 template

VARIANTS: dict[str, Rule] = {
    "direct": Rule(),
    "channel": Rule("channel"),
    "channel-norm": Rule("channel", length_norm=True),
    "centroid": Rule("centroid"),                                         # the default: Euclidean, standardised
    "centroid-cos-std": Rule("centroid", distance="cosine"),
    "centroid-cos": Rule("centroid", distance="cosine", standardise=False),  # the paper's plain nearest centroid
    "centroid-euc": Rule("centroid", standardise=False),
}


FOUND_FROM = "auto (with rule stage)"  # compose.py's report runs whose demonstrations stage gives the found prompt


def found_prompt(task: str, split: str) -> Prompt:
    """The prompt `auto` handed to its rule stage on this split (what its earlier stages found: searched
    demonstrations on SST-2, label words then demonstrations on TREC; fold 1 where it cross-fitted),
    uncalibrated, from the run folders of compose.py's report (``<task>/<seed>/auto (with rule
    stage)``); the row records the prompt itself."""
    cell = f"{task}/{split.removeprefix('seed-')}/{FOUND_FROM}"
    cells = load_cells(RESULTS / "compose_report.jsonl")
    # AG News's runs scored a seeded sample of test: their cells end in /test<limit>
    row = cells.get(cell) or next((r for k, r in cells.items() if k.startswith(cell + "/test")), None)
    if row is None:
        raise SystemExit(f"no compose.py report row {cell!r}: run compose.py --part report --pipelines auto first")
    stages = json.loads((Path(row["run_dir"]) / "result.json").read_text())["details"]["stages"]
    first_fold = [s for s in stages if s.get("fold", 1) == 1]
    before = first_fold[: next(i for i, s in enumerate(first_fold) if s["strategy"] == "rule")]
    found = load_prompt(Path(before[-1]["run_dir"]) / "prompt.json")
    assert isinstance(found, Prompt)
    return found.uncalibrated


def prompt_for(task: str, data: TaskData, demos: int, split: str) -> Prompt:
    """The manual prompt (LM-BFF's cloze one for ``sst2-cloze``), with ``demos`` random train examples per
    class shown in front (seeded by the split), or none; for ``<task>-found``, the prompt `found_prompt`
    gives (its own demonstrations; ``demos`` must be 0)."""
    if task.endswith("-found"):
        if demos:
            raise SystemExit(f"{task}: the found prompt carries its own demonstrations; give --demos 0")
        return found_prompt(task.removesuffix("-found"), split)
    prompt = Prompt(CLOZE[0], CLOZE[1]) if task == "sst2-cloze" else data.task.default_prompt
    if not demos:
        return prompt
    rng = random.Random(f"rules-demos:{task}:{split}")
    shown = [ex for c in range(len(data.task.labels))
             for ex in rng.sample([e for e in data.train if e.label == c], demos)]
    rng.shuffle(shown)
    return prompt.with_demos(Demonstrations(tuple(Demonstration(dict(ex.fields), data.task.labels[ex.label])
                                                  for ex in shown), overflow="drop"))


def score_variants(lm: Any, data: TaskData, prompt: Prompt, variants: list[str]) -> list[dict[str, Any]]:
    """Every rule variant × calibration none/prior on ``data``'s test, with the gain over direct."""
    ev = Evaluator(lm, data.task)
    test, train = data.test, data.train
    rows, direct = [], {}
    for name in variants:
        for calibration in ("none", "prior"):
            ev.budget = Budget()
            started = time.perf_counter()
            ruled = ev.fit_rule([prompt], VARIANTS[name], train)[0]
            fit_s = time.perf_counter() - started
            chosen = ev.calibrate([ruled], calibration, train)[0] if calibration != "none" else ruled
            started = time.perf_counter()
            before = ev.budget.used
            result = ev.score(chosen, test)
            test_s = time.perf_counter() - started
            if name == "direct":
                direct[calibration] = result
            delta = bootstrap_delta(result, direct[calibration], seed=0)
            rows.append({"rule": name, "calibration": calibration, "test": result.score,
                         "gain_over_direct": delta["delta"], "ci95": delta["ci95"],
                         "s_per_example": round(test_s / len(test), 5),
                         "forwards_per_example": (ev.budget.used - before) / len(test), "fit_s": round(fit_s, 2),
                         "predicted": sorted(result.per_class(data.task.labels).items())})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["heldout", "report"], required=True)
    parser.add_argument("--tasks", default="sst2,trec")
    parser.add_argument("--seeds", default="13,21,42", help="LM-BFF data seeds (report)")
    parser.add_argument("--splits", default="1,2", help="held-out split seeds (heldout)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--test-limit", type=int, default=None, help="report: score a seeded sample of test")
    parser.add_argument("--n-eval", type=int, default=500, help="heldout: rows each split is scored on")
    parser.add_argument("--demos", default="0,1", help="demonstrations per class in front of the prompt (0: none)")
    args = parser.parse_args()

    lm = load_model("smollm2-135m")
    variants = args.variants.split(",")
    cells_path = RESULTS / f"rules_{args.part}.jsonl"
    done = load_cells(cells_path)
    for task in args.tasks.split(","):
        base = "sst2" if task == "sst2-cloze" else task.removesuffix("-found")
        datasets = {(k if args.part == "heldout" else f"seed-{k}"): d for k, d in
                    part_datasets(args.part, base, args.splits, args.seeds, args.n_eval, args.test_limit).items()}
        for (split, data), demos in itertools.product(datasets.items(), [int(d) for d in args.demos.split(",")]):
            cell = f"{task}|{split}|demos={demos}|{','.join(variants)}"
            if cell in done:
                continue
            started = time.perf_counter()
            prompt = prompt_for(task, data, demos, split)
            rows = score_variants(lm, data, prompt, variants)
            row = {"cell": cell, "task": task, "split": split, "demos_per_class": demos, "rows": rows,
                   "prompt": prompt.to_json(),
                   "n_test": len(data.test),
                   "test_limit": args.test_limit, "threads": torch.get_num_threads(),
                   "wall_s": round(time.perf_counter() - started, 1)}
            print(json.dumps({k: v for k, v in row.items() if k != "rows"}), flush=True)
            for r in rows:
                print(f"  {r['rule']:<17} {r['calibration']:<6} {r['test']:.4f}  {r['gain_over_direct']:+.4f} "
                      f"{r['s_per_example']:.4f}s/ex", flush=True)
            with cells_path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            done[cell] = row
    atomic_write_json(RESULTS / f"rules_{args.part}.json", summarise(list(done.values())))


def summarise(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task, rule and calibration: test mean ± std over splits, mean gain over direct, the per-split
    intervals, and the cost per example."""
    table: dict[str, dict[str, Any]] = {}
    for cell in cells:
        for r in cell["rows"]:
            demos = cell.get("demos_per_class", 0)
            key = f"{cell['task']}|{demos}|{r['rule']}|{r['calibration']}"
            table.setdefault(key, {"task": cell["task"], "demos_per_class": demos, "rule": r["rule"],
                                   "calibration": r["calibration"], "splits": [], "test": [], "gain": [], "ci95": [],
                                   "s_per_example": []})
            entry = table[key]
            entry["splits"].append(cell["split"])
            entry["test"].append(r["test"])
            entry["gain"].append(r["gain_over_direct"])
            entry["ci95"].append(r["ci95"])
            entry["s_per_example"].append(r["s_per_example"])
    out = []
    for entry in table.values():
        out.append({**{k: entry[k] for k in ("task", "demos_per_class", "rule", "calibration", "splits", "ci95")},
                    "test": mean_std(entry["test"]), "test_mean": round(statistics.mean(entry["test"]), 4),
                    "gain_mean": round(statistics.mean(entry["gain"]), 4),
                    "s_per_example": round(statistics.mean(entry["s_per_example"]), 5)})
    return {"model": "smollm2-135m",
            "rows": sorted(out, key=lambda r: (r["task"], r["demos_per_class"], r["calibration"], r["rule"]))}


if __name__ == "__main__":
    main()
