"""The ``autoprompt`` command line: it parses, calls `autoprompt.api`, and renders; no logic.

Errors in the input print one line (``error: ...``) and exit with code 2.

    common.py     the app, one-line errors, option types
    info.py       tasks, models, strategies
    scoring.py    evaluate, predict
    searching.py  search
    experiments.py tune, suite
    compare.py    leaderboard, report
"""

from autoprompt.cli import compare, experiments, info, scoring, searching  # noqa: F401 - each module registers its commands
from autoprompt.cli.common import _as_flag, app

__all__ = ["_as_flag", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
