"""Run a benchmark suite from ``benchmarks/suite.toml``, then print the leaderboard and write the report.

    python benchmarks/run.py --suite quick            # SST-2 and RTE, 3 seeds, every strategy (CPU, < 30 min)
    python benchmarks/run.py --suite full             # for a GPU
    python benchmarks/run.py --suite quick --dry-run  # list the runs and which are done

Every run is a normal search (artifacts under the suite's ``out``, a row in its leaderboard).
Runs already finished are skipped; an interrupted run is resumed from its checkpoint, so the
suite itself can be stopped (Ctrl-C) and started again.
"""

from __future__ import annotations

import argparse
import time
import tomllib
from pathlib import Path

from autoprompt import load_model
from autoprompt.leaderboard import aggregate, load_rows, to_markdown
from autoprompt.report import write as write_report
from autoprompt.search import SearchSpec, find_run, run_search

SUITES = Path(__file__).with_name("suite.toml")


def plan(suite: dict) -> list[SearchSpec]:
    """One spec per task × data seed × strategy entry of the suite."""
    specs = []
    for task in suite["tasks"]:
        for data_seed in suite["data_seeds"]:
            for name, entry in suite["strategies"].items():
                specs.append(SearchSpec(task=task, strategy=entry.get("strategy", name),
                                        params=dict(entry.get("params", {})), model=suite["model"],
                                        shots=suite.get("shots"), data_seed=data_seed, seed=0,
                                        budget=entry.get("budget"), out=suite["out"],
                                        test_limit=suite.get("test_limit")))
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--suites", default=str(SUITES), help="the TOML file of suites")
    parser.add_argument("--dry-run", action="store_true", help="list the runs; run nothing")
    parser.add_argument("--report", default=None, help="report folder (default: <out>/report)")
    args = parser.parse_args()
    suites = tomllib.loads(Path(args.suites).read_text())
    if args.suite not in suites:
        raise SystemExit(f"error: no suite {args.suite!r} in {args.suites}; choose one of {', '.join(suites)}")
    suite = suites[args.suite]
    specs = plan(suite)
    status = []
    for spec in specs:
        folder = find_run(spec)
        status.append("done" if folder and (folder / "result.json").is_file() else
                      "resume" if folder else "todo")
    print(f"suite {args.suite}: {len(specs)} runs, {status.count('done')} done, {status.count('resume')} to resume, "
          f"{status.count('todo')} to run -> {suite['out']}", flush=True)
    if args.dry_run:
        for spec, state in zip(specs, status, strict=True):
            print(f"  {state:6} {spec.task} seed {spec.data_seed} {spec.strategy} {spec.params} budget {spec.budget}")
        return
    lm = load_model(suite["model"])
    started, ran = time.perf_counter(), 0
    todo = [spec for spec, state in zip(specs, status, strict=True) if state != "done"]
    for i, spec in enumerate(todo, 1):
        folder = find_run(spec)
        result = run_search(spec, lm=lm, resume=folder) if folder else run_search(spec, lm=lm)
        ran += 1
        elapsed = time.perf_counter() - started
        eta = elapsed / ran * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {spec.task} seed {spec.data_seed} {spec.strategy}: test "
              f"{result['scores']['test']:.4f} (manual {result['baseline']['test']:.4f}) in {result['wall_s']:.0f} s; "
              f"elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min", flush=True)
    db = Path(suite["out"]) / "leaderboard.db"
    print(to_markdown(aggregate(load_rows(db))))
    written = write_report(args.report or Path(suite["out"]) / "report", db)
    print(f"report: {written['html']} and {written['markdown']}")


if __name__ == "__main__":
    main()
