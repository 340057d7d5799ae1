"""``paraphrase`` on smollm2-135m: manual vs top-1 vs top-k vs optimized ensemble, side by side.

One search per data seed (the search does not depend on ``select``: it is only read at the end),
then the three selections are built from the run's final state and scored on test with one
shared evaluator cache; ``gated`` is what the search reports after its gate (its ``result.json``),
the selections are the ungated candidates. Prints and writes ``benchmarks/results/paraphrase_selection_<task>.json``.

    python benchmarks/paraphrase_selection.py --task sst2 --seeds 13,21,42
    python benchmarks/paraphrase_selection.py --task rte --seeds 13,21,42
    python benchmarks/paraphrase_selection.py --task lama:P37 --seeds 0
    python benchmarks/paraphrase_selection.py --task lama:P19 --seeds 0 --dev-limit 50 --test-limit 100 \\
        --param score_examples=16 --budget 1500

LAMA has no data seeds (fixed train/dev/test); ``--dev-limit``/``--test-limit`` take a seeded
random subset (recorded in the protocol) where ranking all candidate objects is slow on a CPU.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from figures import sample_std

from autoprompt import load_model
from autoprompt.scoring.budget import Budget
from autoprompt.scoring.evaluator import Evaluator
from autoprompt.search import SearchContext, SearchSpec, create, run_search
from autoprompt.tasks import load_task
from autoprompt.tasks.base import TaskData

SELECTIONS = ("top1", "topk", "optimized")


def subset(data: TaskData, dev_limit: int | None, test_limit: int | None) -> TaskData:
    """The same task with seeded random subsets of dev and test (LAMA on a CPU)."""
    def cut(name: str, k: int | None):
        return lambda: data.split(name) if not k or k >= len(data.split(name)) \
            else random.Random(0).sample(data.split(name), k)
    protocol = {**data.protocol, "dev_limit": dev_limit, "test_limit": test_limit, "limit_seed": 0}
    return TaskData(data.task, protocol, {"train": lambda: data.train, "dev": cut("dev", dev_limit),
                                          "test": cut("test", test_limit)})


def finished(spec: SearchSpec) -> Path | None:
    """A finished run of the same spec (any ``select``) under ``spec.out``."""
    for result in sorted(Path(spec.out).glob(f"{spec.task.replace(':', '_')}/{spec.strategy}/*/result.json")):
        old = json.loads((result.parent / "spec.json").read_text())
        same = all(old.get(k) == v for k, v in spec.to_json().items() if k != "params")
        if same and all(str(old["params"].get(k)) == str(v) for k, v in spec.params.items() if k != "select"):
            return result.parent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--seeds", default="13,21,42")
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--budget", type=int, default=None)
    parser.add_argument("--dev-limit", type=int, default=None)
    parser.add_argument("--test-limit", type=int, default=None)
    parser.add_argument("--out", default="runs-benchmark")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    params = dict(p.split("=", 1) for p in args.param)
    lama = args.task.startswith("lama")
    rows = []
    for data_seed in map(int, args.seeds.split(",")):
        shots = None if lama else 16
        data = subset(load_task(args.task, None, shots, data_seed), args.dev_limit, args.test_limit)
        spec = SearchSpec(task=args.task, strategy="paraphrase", params=params, shots=shots,
                          data_seed=data_seed, seed=0, budget=args.budget, out=args.out)
        run_dir = finished(spec)
        if run_dir is None:
            run_dir = Path(run_search(spec, lm=lm, data=data).run_dir)
        result = json.loads((run_dir / "result.json").read_text())
        state = json.loads((run_dir / "checkpoint.json").read_text())["state"]

        # the selections from the final state, all scored with one cache (members are shared)
        final = Evaluator(lm, data.task, majority_label=data.protocol.get("majority_label"))
        ctx = SearchContext(lm, data.task, data.train, data.dev, Evaluator(lm, data.task, budget=Budget(10**9)),
                            Budget(10**9), spec.seed)
        started = time.perf_counter()
        # "gated": what the search itself reports (its gate against the manual prompt, `result.json`)
        scores = {"manual": final.score(data.task.default_prompt, data.test).score,
                  "gated": result["scores"]["test"]}
        prompts = {}
        for select in SELECTIONS:
            searcher = create("paraphrase", {**result["params"], "select": select})
            prompts[select] = searcher.best(ctx, state)
            scores[select] = final.score(prompts[select], data.test).score
        ranked = sorted(state["dev"], key=lambda t: -state["dev"][t])
        optimized = prompts["optimized"]
        rows.append({
            "data_seed": data_seed, "test": {k: round(v, 4) for k, v in scores.items()},
            "dev": {"manual": round(state["dev"].get(data.task.default_prompt.template.source, float("nan")), 4),
                    "top1": round(state["dev"][ranked[0]], 4)},
            "top_templates_by_dev": [{"template": t, "dev": round(state["dev"][t], 4)} for t in ranked[:5]],
            "gate_passed": bool(result["selection"].get("reliable")),
            "ensemble_weights": [round(w, 3) for w in getattr(optimized, "weights", (1.0,))],
            "candidates_scored": len(state["pool"]), "dropped_rewrites": state["dropped"],
            "rounds": state["round"], "budget": result["budget"]["used"], "search_wall_s": result["wall_s"],
            "selection_test_s": round(time.perf_counter() - started, 1), "split_sizes": {
                "train": len(data.train), "dev": len(data.dev), "test": len(data.test)},
            "run_dir": str(run_dir)})
        print(json.dumps(rows[-1]), flush=True)
    keys = ("manual", "gated", *SELECTIONS)
    summary = {k: round(statistics.mean(r["test"][k] for r in rows), 4) for k in keys}
    summary.update({f"{k}_std": round(sample_std(r["test"][k] for r in rows), 4) for k in keys})
    summary["search_wall_s"] = round(statistics.mean(r["search_wall_s"] for r in rows), 1)
    report = {"task": args.task if lama else f"{args.task} 16-shot", "model": "smollm2-135m", "params": params,
              "budget": args.budget, "dev_limit": args.dev_limit, "test_limit": args.test_limit,
              "metric": data.task.metric, "runs": rows, "mean": summary}
    print(json.dumps(summary))
    out = Path(__file__).parent / "results" / f"paraphrase_selection_{args.task.replace(':', '_')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
