"""Recording finished runs in the leaderboard.

The drivers record (`autoprompt.api.search`, tuning trials, suites, transfers), never the search
loop: a search writes its run folder and returns; what keeps rows is the caller's choice, so the
search core needs no database. A finished search is never lost to its database: the run folder is
complete and can be imported later (``leaderboard import``).
"""

from __future__ import annotations

import os
from pathlib import Path

from autoprompt import events
from autoprompt.errors import AutopromptError
from autoprompt.results.leaderboard import record
from autoprompt.results.record import Interrupted, RunRecord
from autoprompt.search.registry import variant
from autoprompt.search.runs import RunDir


def leaderboard_db(db: str | Path | None, out: str | Path) -> str | Path:
    """Where a run under ``out`` records: ``db``, ``$AUTOPROMPT_DB``, else ``<out>/leaderboard.db``."""
    return db or os.environ.get("AUTOPROMPT_DB") or Path(out) / "leaderboard.db"


def record_run(result: RunRecord, db: str | Path) -> bool:
    """Record a finished run; if the leaderboard cannot take it, say so in ``result`` and return False
    (``result.leaderboard`` names the database and the reason)."""
    try:
        record(result, db)
    except AutopromptError as err:
        message = f"the run was not recorded in the leaderboard: {err}"
        result.leaderboard = {"recorded": False, "db": str(db), "error": str(err)}
        result.warnings.append(message)
        events.warn(message)
        return False
    return True


def record_finished(result: RunRecord | Interrupted, db: str | Path | None, out: str | Path) -> RunRecord | Interrupted:
    """Record what `run_search` or `run_pipeline` returned (an interrupted run is left as it is; a run
    already recorded is a no-op). Where the leaderboard cannot take it, the run folder's
    ``result.json`` is rewritten to say why; returns the result as recorded."""
    if isinstance(result, Interrupted):
        return result
    result.variant = result.variant or variant(result.strategy, result.params)
    if not record_run(result, leaderboard_db(db, out)):
        RunDir(result.run_dir).write_result(result.to_json())
    return result
