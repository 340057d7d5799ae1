"""The transfer matrix: every strategy's SST-2 prompt found on each model, scored on every model.

    python benchmarks/transfer_matrix.py [--suites transfer-smollm2,transfer-gemma]

Runs the suites (`autoprompt suite run`, finished cells skipped), then transfers every run's prompt
to each other suite's model (`autoprompt transfer`: the same examples, next to the target's manual
prompt), and writes ``results/transfer_matrix.json`` and the report (``<out>/report``) with its matrix.
A deep-prefix prompt does not transfer: its cell says why.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autoprompt.api import suite_run, transfer
from autoprompt.backends.store import load_model
from autoprompt.errors import AutopromptError
from autoprompt.experiments.suite import load_suite
from autoprompt.io import atomic_write_json
from autoprompt.results.leaderboard import load_rows
from autoprompt.results.report import write as write_report
from autoprompt.results.versions import versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="transfer-smollm2,transfer-gemma")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "transfer_matrix.json"))
    args = parser.parse_args()
    names = args.suites.split(",")
    suites = [load_suite(name) for name in names]
    started = time.perf_counter()
    for name in names:
        result = suite_run(name)
        print(f"suite {name}: {result['done']}/{result['cells']} cells in {result['wall_s']:.0f} s", flush=True)
    db = Path(suites[0].out) / "leaderboard.db"
    native = [r for r in load_rows(db) if r["source_model"] is None]
    rows = [{"source_model": r["model"], "strategy": r["strategy"], "variant": r["variant"], "model": r["model"],
             "score": r["test"], "manual_score": r["baseline_test"], "gain": r["test"] - r["baseline_test"],
             "n": None, "notes": []} for r in native]
    for target in {s.model for s in suites}:
        lm = load_model(target)
        for r in native:
            if r["model"] == lm.name:
                continue
            try:
                out = transfer(r["prompt_path"], lm, db=db)
            except AutopromptError as err:
                rows.append({"source_model": r["model"], "strategy": r["strategy"], "variant": r["variant"],
                             "model": lm.name, "error": str(err)})
                print(f"{r['model']} {r['variant']} -> {lm.name}: {err}", flush=True)
                continue
            rows.append({"source_model": out["source_model"], "strategy": r["strategy"], "variant": r["variant"],
                         "model": out["model"], "score": out["score"], "manual_score": out["manual_score"],
                         "gain": out["gain"]["delta"], "ci95": out["gain"]["ci95"], "n": out["n"],
                         "template": out["template"], "notes": out["notes"]})
            print(json.dumps(rows[-1]), flush=True)
    written = write_report(Path(suites[0].out) / "report", db)
    atomic_write_json(args.out, {
        "rows": rows, "report": written["html"], "wall_s": round(time.perf_counter() - started),
        "torch_threads": torch.get_num_threads(), "versions": versions(),
        "command": f"python benchmarks/transfer_matrix.py --suites {args.suites}"})
    print(f"report: {written['html']}")


if __name__ == "__main__":
    main()
