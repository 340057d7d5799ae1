"""Peak resident memory of the README's main job and of ``evaluate`` on smollm2-135m (CPU).

Each command runs as its own process; its peak resident set (``ru_maxrss`` from ``wait4``) is what
the operating system reports for it, the libraries, the weights (0.5 GB in fp32) and every
working tensor included. Target: at most 1.5 GB for the 135M model.

    python benchmarks/memory.py [--only ptuning]   # --only: the jobs whose name holds the word; the others'
                                                   # figures are kept from the last full run

Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoprompt.io import atomic_write_json, read_json
from autoprompt.results.versions import versions

CLI = [str(Path(sys.executable).parent / "autoprompt")]  # the console script of this environment
JOBS = {
    "search auto (README main job)": ["search", "--task", "sst2", "--shots", "16", "--data-seed", "13",
                                      "--strategy", "auto"],
    "search gradient": ["search", "--task", "sst2", "--shots", "16", "--data-seed", "13", "--strategy", "gradient"],
    "search ptuning (training, backward)": ["search", "--task", "sst2", "--shots", "16", "--data-seed", "13",
                                            "--strategy", "ptuning"],
    "evaluate sst2 test": ["evaluate", "--task", "sst2", "--split", "test", "--json"],
    "evaluate lama:P19 test": ["evaluate", "--task", "lama:P19", "--split", "test", "--limit", "200", "--json"],
}


def peak_mib(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(peak resident MiB, wall seconds, exit code) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="measure only the jobs whose name contains this")
    args = parser.parse_args()
    path = Path(__file__).parent / "results" / "memory.json"
    figures = read_json(path)["jobs"] if args.only and path.is_file() else {}
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "AUTOPROMPT_DB": str(Path(out) / "lb.db")}
        for name, job in JOBS.items():
            if args.only and args.only not in name:
                continue
            argv = CLI + job + (["--out", out] if job[0] == "search" else [])
            peak, wall, code = peak_mib(argv, env)
            if code:
                raise SystemExit(f"{name} exited with {code}: {' '.join(job)}")
            figures[name] = {"peak_rss_mib": round(peak), "wall_s": round(wall, 1), "command": "autoprompt " +
                             " ".join(job), "git": versions()["git"]}
            print(name, figures[name], flush=True)
    atomic_write_json(path,
                      {"model": "smollm2-135m", "target_mib": 1536, "jobs": figures,
                       "device": f"cpu ({platform.machine()}, {os.cpu_count()} cores)", "versions": versions()})


if __name__ == "__main__":
    main()
