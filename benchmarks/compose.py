"""Searches that build on each other (issue 38): pipelines and ``auto`` against the manual prompt.

Two parts:

* ``--part heldout`` chooses ``auto``'s rule on data no reported figure uses: 16-shot train/dev
  pairs (16 per class each) sampled, seeded, from SST-2's GLUE train and TREC's train, leaving out
  every sentence of every LM-BFF split; each is scored on ``--n-eval`` other train rows (SST-2's
  test, GLUE dev, and TREC's official test are disjoint from train). Never the LM-BFF seeds, never test.
* ``--part report`` runs the pipelines on LM-BFF's 16-shot seeds and scores them on the full test
  sets (AG News: ``--test-limit``, a seeded sample; say so when reporting): test mean ± sample std
  over seeds, the gain over the manual prompt with its 95% paired-bootstrap interval per seed,
  budget, wall time, and how often each stage's gate passed.

    python benchmarks/compose.py --part heldout --tasks sst2,trec --splits 1,2 --pipelines "demos;verbalizer,demos"
    python benchmarks/compose.py --part report --tasks sst2,trec,rte --seeds 13,21,42 --pipelines auto
    python benchmarks/compose.py --part report --tasks agnews --test-limit 1000 --pipelines auto

Every finished cell is kept in ``benchmarks/results/compose_<part>.jsonl`` (one line per cell) and
skipped when the script runs again, so a stopped run continues; the summary goes to
``benchmarks/results/compose_<part>.json``. Figures: smollm2-135m, CPU; the thread count is recorded.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from figures import load_cells, mean_std

from autoprompt import Evaluator, TaskData, load_model, load_prompt, load_task
from autoprompt.io import atomic_write_json
from autoprompt.search import SearchSpec, limit_test, run_pipeline
from autoprompt.search.selection import bootstrap_delta
from autoprompt.tasks import LMBFF_SEEDS, Example

RESULTS = Path(__file__).parent / "results"


def held_out_splits(task: str, seeds: list[int], shots: int = 16, n_eval: int = 500) -> dict[int, TaskData]:
    """Per seed: a class-balanced k-shot train and dev from ``task``'s full train (no sentence of any
    LM-BFF split), and ``n_eval`` other train rows as the split's "test" (the held-out scoring set)."""
    full = load_task(task, None, None, 13)
    lmbff = {_key(ex) for s in LMBFF_SEEDS for split in ("train", "dev")
             for ex in getattr(load_task(task, None, 16, s), split)}
    rows = [ex for ex in full.train + full.dev if _key(ex) not in lmbff]
    out = {}
    for seed in seeds:
        rng = random.Random(f"compose-heldout:{task}:{seed}")
        # a class the LM-BFF splits nearly exhaust (TREC's ABBR) gives what is left, half to each split
        by_class = {c: rng.sample(pool, min(2 * shots, len(pool))) for c in range(len(full.task.labels))
                    if (pool := [ex for ex in rows if ex.label == c])}
        train = [ex for c in by_class for ex in by_class[c][: len(by_class[c]) // 2]]
        dev = [ex for c in by_class for ex in by_class[c][len(by_class[c]) // 2 :]]
        used = {_key(ex) for ex in train + dev}
        pool = [ex for ex in rows if _key(ex) not in used]
        test = random.Random(f"compose-eval:{task}:{seed}").sample(pool, min(n_eval, len(pool)))
        splits = {"train": train, "dev": dev, "test": test}
        out[seed] = TaskData(full.task, {"shots": shots, "data_seed": f"heldout-{seed}",
                                         "sources": {"all": f"{task} train, held-out sample"}},
                             {k: (lambda v=v: v) for k, v in splits.items()})
    return out


def part_datasets(part: str, task: str, splits: str, seeds: str, n_eval: int,
                  test_limit: int | None) -> dict[str, TaskData]:
    """The data a benchmark part runs on: ``heldout`` → ``{"heldout-<s>": ...}`` over the comma-separated
    ``splits``; ``report`` → ``{"<seed>": ...}`` over LM-BFF's ``seeds`` (test limited to ``test_limit``)."""
    if part == "heldout":
        return {f"heldout-{s}": d for s, d in held_out_splits(task, [int(x) for x in splits.split(",")],
                                                            n_eval=n_eval).items()}
    out = {}
    for s in seeds.split(","):
        data = load_task(task, None, 16, int(s), "smollm2-135m")
        out[s] = limit_test(data, test_limit) if test_limit else data
    return out


def _key(ex: Example) -> str:
    return " ".join(ex.fields.values()).strip().lower()


def run_cell(lm: Any, data: TaskData, task: str, strategy: str, params: dict[str, Any], seed: int,
             out: str, budget: int | None, resume: str | None = None) -> dict[str, Any]:
    """One search or pipeline on ``data`` (or its interrupted run folder ``resume``, continued); the figures
    a row needs (``wall_s``: this call's, so a resumed row's excludes the part run before)."""
    spec = SearchSpec(task=task, strategy=strategy, params=dict(params), shots=16, data_seed=13, seed=0,
                      budget=budget, out=out)
    started = time.perf_counter()
    # every row is a pipeline (one stage is a pipeline too: same data use, one gate on dev at the end)
    result = run_pipeline(spec, lm=lm, data=data, resume=resume).to_json()
    stages = result["details"].get("stages", [])
    refit = result["details"].get("refit")
    if refit:  # the prompt the final gate passed, before its statistics were refitted: what refitting gave
        ev = Evaluator(lm, data.task)
        gated = ev.score(load_prompt(refit["gated_prompt"]), data.test)
        found = ev.score(load_prompt(Path(result["run_dir"]) / "prompt.json"), data.test)
        refit = {"on": refit["on"], "what": refit["what"], "gated_test": gated.score,
                 "delta": bootstrap_delta(found, gated, seed=0)}
    return {"test": result["scores"]["test"], "manual_test": result["baseline"]["test"],
            "dev": result["scores"]["dev"], "manual_dev": result["baseline"]["dev"],
            "gain": result["deltas"]["test"]["delta"], "ci95": result["deltas"]["test"]["ci95"],
            "reliable": result["selection"]["reliable"], "detectable_gain": result["selection"].get("detectable_gain"),
            "budget": result["budget"]["used"], "limit": result["budget"]["limit"],
            "wall_s": round(time.perf_counter() - started, 1), "n_test": result["split_sizes"]["test"],
            "stages": [{"strategy": s["strategy"], "passed": s["passed"], "gain": round(s["gain"], 4),
                        "ci95": s["ci95"], "budget": s["budget"]} for s in stages],
            "chosen": [s["strategy"] for s in (result["details"].get("auto") or {}).get("stages", [])] or None,
            "prompt": result["prompt_text"], "run_dir": result["run_dir"], "refit": refit}


def _pipelines(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``auto;verbalizer,demos;auto:effort=medium`` → [(strategy, params)]."""
    out = []
    for item in text.split(";"):
        name, _, rest = item.partition(":")
        params = dict(kv.split("=", 1) for kv in rest.split("+") if kv)
        out.append((name.strip(), params))
    return out


def _label(strategy: str, params: dict[str, Any]) -> str:
    return strategy + (f"[{', '.join(f'{k}={v}' for k, v in sorted(params.items()))}]" if params else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["heldout", "report"], required=True)
    parser.add_argument("--tasks", default="sst2,trec")
    parser.add_argument("--seeds", default="13,21,42", help="LM-BFF data seeds (report)")
    parser.add_argument("--splits", default="1,2", help="held-out split seeds (heldout)")
    parser.add_argument("--pipelines", default="auto",
                        help='";"-separated pipelines (one strategy is a one-stage pipeline), optionally ":k=v+k=v" '
                             '(e.g. "auto:effort=medium")')
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None, help="report: score a seeded sample of test")
    parser.add_argument("--n-eval", type=int, default=500, help="heldout: rows each split is scored on")
    parser.add_argument("--out", default="runs-compose")
    parser.add_argument("--resume", default=None,
                        help="an interrupted run folder of the one cell given (task, seed, pipeline): continue it")
    parser.add_argument("--tag", default="",
                        help="kept in each row's pipeline name: the same pipeline from another version of the code "
                             "(e.g. auto after issue 39)")
    args = parser.parse_args()

    lm = load_model("smollm2-135m")
    cells_path = RESULTS / f"compose_{args.part}.jsonl"
    done = load_cells(cells_path)
    for task in args.tasks.split(","):
        datasets = part_datasets(args.part, task, args.splits, args.seeds, args.n_eval, args.test_limit)
        for split, data in datasets.items():
            for strategy, params in _pipelines(args.pipelines):
                label = _label(strategy, params) + (f" ({args.tag})" if args.tag else "")
                cell = f"{task}/{split}/{label}" + (f"/test{args.test_limit}" if args.test_limit
                                                                     else "") + (f"/b{args.budget}" if args.budget
                                                                                 else "")
                if cell in done:
                    continue
                row = {"cell": cell, "task": task, "split": split, "pipeline": label,
                       "threads": torch.get_num_threads(), "test_limit": args.test_limit,
                       "command": (f"python benchmarks/compose.py --part {args.part} --tasks {task} "
                                   + (f"--splits {split.removeprefix('heldout-')}" if args.part == "heldout"
                                      else f"--seeds {split}")
                                   + f" --pipelines '{strategy}" + (":" + "+".join(f"{k}={v}" for k, v in
                                                                      params.items()) if params else "") + "'"
                                   + (f" --test-limit {args.test_limit}" if args.test_limit else "")
                                   + (f" --budget {args.budget}" if args.budget else "")
                                   + (f" --tag '{args.tag}'" if args.tag else "")),
                       **run_cell(lm, data, task, strategy, params, 0, args.out, args.budget, args.resume),
                       **({"resumed_from": args.resume} if args.resume else {})}
                print(json.dumps(row), flush=True)
                done[cell] = row
                with cells_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    summary = summarise(list(done.values()))
    atomic_write_json(RESULTS / f"compose_{args.part}.json", summary)
    for line in summary["table"]:
        print(line)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (task, pipeline): test mean ± sample std over seeds or splits, the manual prompt's, the gain, how
    often the final gate and each stage's gate passed, budget and wall time."""
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["pipeline"], r.get("test_limit")), []).append(r)
    table = ["| task | pipeline | n | test | manual | gain (per seed, 95% CI) | final gate | stage gates passed "
             "| budget | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    out = []
    for (task, pipeline, limit), members in sorted(groups.items()):
        members.sort(key=lambda r: r["split"])
        stage_pass: dict[str, list[bool]] = {}
        for r in members:
            for s in r["stages"]:
                stage_pass.setdefault(s["strategy"], []).append(s["passed"])
        entry = {"task": task, "pipeline": pipeline, "test_limit": limit, "n": len(members),
                 "splits": [r["split"] for r in members],
                 "test_mean": round(statistics.mean(r["test"] for r in members), 4),
                 "manual_mean": round(statistics.mean(r["manual_test"] for r in members), 4),
                 "test": mean_std(r["test"] for r in members), "manual": mean_std(r["manual_test"] for r in members),
                 "gains": [{"split": r["split"], "gain": round(r["gain"], 4), "ci95": r["ci95"]} for r in members],
                 "gate_passed": sum(bool(r["reliable"]) for r in members),
                 # the prompts as the final gate passed them, before `refit` (where it refitted nothing: the same)
                 "gated": mean_std((r.get("refit") or {}).get("gated_test", r["test"]) for r in members),
                 "refitted": sum(bool(r.get("refit")) for r in members),
                 "stage_gates": {k: f"{sum(v)}/{len(v)}" for k, v in stage_pass.items()},
                 "budget_median": statistics.median(r["budget"] for r in members),
                 "wall_s_median": statistics.median(r["wall_s"] for r in members),
                 "threads": sorted({r["threads"] for r in members}), "commands": [r["command"] for r in members]}
        out.append(entry)
        gains = "; ".join(f"{g['split']}: {g['gain']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
                          for g in entry["gains"])
        stages = ", ".join(f"{k} {v}" for k, v in entry["stage_gates"].items())
        table.append(f"| {task}{f' (test {limit})' if limit else ''} | {pipeline} | {entry['n']} | {entry['test']} | "
                     f"{entry['manual']} | {gains} | {entry['gate_passed']}/{entry['n']} | {stages} | "
                     f"{entry['budget_median']:.0f} | {entry['wall_s_median']:.0f} |")
    return {"rows": out, "table": table}


if __name__ == "__main__":
    main()
