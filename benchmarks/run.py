"""Run a benchmark suite from ``benchmarks/suite.toml``: now the command ``autoprompt suite run``.

    python benchmarks/run.py --suite quick     # = autoprompt suite run quick
    python benchmarks/run.py --suite quick --dry-run

Kept so older notes' commands still work; every option after ``--suite`` is passed on (see
``autoprompt suite run --help``: ``--workers``, ``--storage postgresql://...`` for several machines).
"""

from __future__ import annotations

import sys

from autoprompt.cli import app


def main() -> None:
    args = sys.argv[1:]
    suite = "quick"
    if "--suite" in args:
        at = args.index("--suite")
        suite = args[at + 1]
        del args[at: at + 2]
    app(["suite", "run", suite, *args])


if __name__ == "__main__":
    main()
