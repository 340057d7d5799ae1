"""Do the discrete searches beat the manual prompt on held-out test? Before vs after the selection protocol.

For each (task, strategy) the LM-BFF 16-shot seeds are searched with the strategy's defaults
(calibration, margin objective, the gate) on smollm2-135m; the found prompt and the manual prompt
from the same run are scored on the full test set. Per row: test mean ± std (sample std over
seeds, 0 for one) of found and manual, the mean dev − test gap of the found prompt, the seeds where found <
manual on test, and how many runs passed the gate. "Before" rows are read from the result files
of the earlier protocol already in ``benchmarks/results/`` (not rerun). ``--cloze`` adds LM-BFF's
cloze SST-2 prompt under each calibration (``prior`` estimated on each seed's 32 train inputs).

    python benchmarks/generalisation.py --tasks sst2 --strategies gradient,verbalizer,paraphrase
    python benchmarks/generalisation.py --tasks trec,agnews --strategies verbalizer,gradient --seeds 13,21,42
    python benchmarks/generalisation.py --cloze
    python benchmarks/generalisation.py --tasks sst2 --strategies gradient --seeds 100 --merge

Finished runs under ``--out`` are reused, so it resumes; prints and writes
``benchmarks/results/generalisation.json`` (rows merged with what the file already holds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from autoprompt import Evaluator, Prompt, load_model, load_task
from autoprompt.io import atomic_write_json, read_json
from autoprompt.search import SearchSpec, finished_result, run_search

RESULTS = Path(__file__).parent / "results"
OUT_FILE = RESULTS / "generalisation.json"
SEEDS = (13, 21, 42, 87, 100)
CLOZE = Prompt("{sentence} It was [P]", {"negative": ["terrible"], "positive": ["great"]})
# the earlier protocol's figures (selection by dev accuracy, no calibration), as committed
BEFORE = {("sst2", "gradient"): "gradient_sst2.json", ("sst2", "verbalizer"): "verbalizer_sst2_method-likelihood.json",
          ("trec", "verbalizer"): "verbalizer_trec_method-likelihood.json",
          ("sst2", "paraphrase"): "paraphrase_selection_sst2.json"}


def summarize(runs: list[dict]) -> dict:
    found = [r["found_test"] for r in runs]
    manual = [r["manual_test"] for r in runs]
    return {"seeds": [r["data_seed"] for r in runs], "found_test_mean": round(statistics.mean(found), 4),
            "found_test_std": round(statistics.stdev(found) if len(found) > 1 else 0.0, 4),
            "manual_test_mean": round(statistics.mean(manual), 4),
            "gain": round(statistics.mean(found) - statistics.mean(manual), 4),
            "dev_test_gap": round(statistics.mean(r["found_dev"] - r["found_test"] for r in runs), 4),
            "seeds_below_manual": [r["data_seed"] for r in runs if r["found_test"] < r["manual_test"] - 1e-9],
            "reliable": sum(bool(r.get("reliable")) for r in runs)}


def before(task: str, strategy: str) -> dict | None:
    name = BEFORE.get((task, strategy))
    if name is None or not (RESULTS / name).is_file():
        return None
    runs = read_json(RESULTS / name)["runs"]
    if name.startswith("paraphrase_selection"):  # that file scores every selection of one search: top-1 was the default
        runs = [{"data_seed": r["data_seed"], "found_test": r["test"]["top1"], "manual_test": r["test"]["manual"],
                 "found_dev": r["dev"]["top1"]} for r in runs]
    return summarize(runs)


def search_rows(lm, task: str, strategy: str, seeds: list[int], out: str) -> list[dict]:
    runs = []
    for seed in seeds:
        spec = SearchSpec(task=task, strategy=strategy, shots=16, data_seed=seed, seed=0, out=out)
        r = finished_result(spec) or run_search(spec, lm=lm).to_json()
        runs.append({"data_seed": seed, "manual_test": r["baseline"]["test"], "found_test": r["scores"]["test"],
                     "manual_dev": r["baseline"]["dev"], "found_dev": r["scores"]["dev"],
                     "reliable": r["selection"]["reliable"], "selection": r["selection"]["message"],
                     "test_delta": r["deltas"]["test"], "prompt": r["prompt_text"], "calibration": r["calibration"],
                     "verbalizer": r["prompt"].get("verbalizer"), "triggers": r.get("trigger_text", ""),
                     "budget": r["budget"]["used"], "steps": r["steps"], "wall_s": r["wall_s"],
                     "torch_threads": torch.get_num_threads(), "run_dir": r["run_dir"]})
        print(json.dumps(runs[-1]), flush=True)
    return runs


def cloze_rows(lm, seeds: list[int]) -> dict:
    rows = []
    for seed in seeds:
        data = load_task("sst2", None, 16, seed)
        ev = Evaluator(lm, data.task)
        for method in ("none", "contextual", "prior"):
            prompt = ev.calibrate([CLOZE], method, data.train)[0]
            rows.append({"data_seed": seed, "calibration": method, "test": round(ev.score(prompt, data.test).score, 4)})
            print(json.dumps(rows[-1]), flush=True)
    return {"template": CLOZE.template.source, "verbalizer": CLOZE.verbalizer.to_json(), "rows": rows,
            **cloze_summary(rows)}


def cloze_summary(rows: list[dict]) -> dict:
    """Per calibration: test mean and sample std over the seeds."""
    tests = {m: [r["test"] for r in rows if r["calibration"] == m] for m in ("none", "contextual", "prior")}
    return {"mean": {m: round(statistics.mean(v), 4) for m, v in tests.items()},
            "std": {m: round(statistics.stdev(v) if len(v) > 1 else 0.0, 4) for m, v in tests.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--strategies", default="gradient,verbalizer,paraphrase")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--cloze", action="store_true", help="only the cloze prompt under each calibration")
    parser.add_argument("--out", default="runs-generalisation")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of seeds not given that the results file already holds for a row")
    args = parser.parse_args()
    lm = load_model("smollm2-135m")
    seeds = [int(s) for s in args.seeds.split(",")]
    report = read_json(OUT_FILE) if OUT_FILE.is_file() else {"model": lm.name, "rows": {}}
    if args.cloze:
        report["cloze_sst2"] = cloze_rows(lm, seeds)
    else:
        for task in args.tasks.split(","):
            for strategy in args.strategies.split(","):
                runs = search_rows(lm, task, strategy, seeds, args.out)
                if args.merge:  # a new seed joins the row; the seeds already measured are kept as they were
                    kept = report["rows"].get(f"{task}/{strategy}", {}).get("runs", [])
                    runs = sorted([r for r in kept if r["data_seed"] not in seeds] + runs, key=lambda r: r["data_seed"])
                report["rows"][f"{task}/{strategy}"] = {"after": summarize(runs), "before": before(task, strategy),
                                                       "runs": runs}
                print(json.dumps({f"{task}/{strategy}": report["rows"][f"{task}/{strategy}"]["after"]}), flush=True)
    for key, row in report["rows"].items():  # every row summarised alike, also those not rerun now
        row["after"], row["before"] = summarize(row["runs"]), before(*key.split("/"))
    if "cloze_sst2" in report:
        report["cloze_sst2"].update(cloze_summary(report["cloze_sst2"]["rows"]))
    report["torch_threads"] = torch.get_num_threads()
    atomic_write_json(OUT_FILE, report)


if __name__ == "__main__":
    main()
