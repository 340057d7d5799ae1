"""The leaderboard: every finished run as one database row (its aggregates are `autoprompt.results.tables`).

Rows live in any SQLAlchemy database: an embedded SQLite file by default (``runs/leaderboard.db``
beside the run folders; ``--db`` or ``AUTOPROMPT_DB`` to change), or e.g. a shared PostgreSQL
URL. Each run is written in one transaction, keyed by its run folder, so recording twice (or
``leaderboard import`` over folders already recorded) adds nothing, and concurrent writers lose
nothing.

Each row keeps its strategy variant (the strategy with the parameters that differ from its defaults)
and its split protocol, so aggregates never average rows whose protocols differ (16-shot vs full
data, a different test set).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from autoprompt import events
from autoprompt.errors import AutopromptError
from autoprompt.io import read_user_json
from autoprompt.results.record import RunRecord

DEFAULT_DB = "runs/leaderboard.db"

metadata = MetaData()
runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_key", String(400), unique=True, nullable=False),  # task/strategy/run-folder
    Column("task", String(200), index=True, nullable=False),
    Column("protocol", String(200), nullable=False),               # e.g. "16-shot, test n=872"
    Column("shots", Integer), Column("data_seed", Integer), Column("split", String(20)),
    Column("model", String(300), index=True), Column("strategy", String(100)), Column("variant", String(400)),
    Column("params", Text), Column("seed", Integer), Column("metric", String(20)),
    Column("dev", Float), Column("test", Float), Column("baseline_dev", Float), Column("baseline_test", Float),
    Column("forwards", Integer), Column("backwards", Integer), Column("budget_used", Integer),
    Column("budget_limit", Integer), Column("tokens", Integer), Column("wall_s", Float),
    Column("trainable_params", Integer),
    Column("versions", Text), Column("git_rev", String(64)), Column("prompt_path", Text),
    Column("prompt_fingerprint", String(32)), Column("prompt_text", Text), Column("run_dir", Text),
    Column("finished_at", String(40)), Column("model_licence", String(200)),
    Column("source_model", String(300)),  # set for a prompt found on another model (`autoprompt transfer`)
    Column("start_fingerprint", String(32)),  # a warm start's prompt (`search --from`); NULL: the manual prompt
    Column("stages", Text),  # a pipeline's stages, as JSON: strategy, budget, gain, whether its gate passed
    Column("search_dtype", String(8)),  # what the search ranked and trained in (fp32, bf16); its scores are fp32
    Column("rule", String(20)),  # the found prompt's decision rule (direct, channel, centroid; "mixed" for an ensemble)
)


def db_url(db: str | Path | None = None) -> str:
    """A SQLAlchemy URL from ``db`` (a URL or a file path), ``$AUTOPROMPT_DB``, or the default file."""
    db = str(db or os.environ.get("AUTOPROMPT_DB") or DEFAULT_DB)
    if db == ":memory:" or db.rstrip("/") in ("sqlite:", "sqlite:/", "sqlite://") or db.endswith(":memory:"):
        raise AutopromptError(f"leaderboard database {db!r} lives in memory and forgets every row at exit; give a "
                              "database file or a server URL")
    if "://" in db:
        return db
    try:
        path = Path(db).expanduser().resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop (RuntimeError before Python 3.13)
        raise AutopromptError(f"leaderboard database {db}: {err}; give a database file or a URL") from None
    if path.is_dir():
        raise AutopromptError(f"leaderboard database {path} is a folder; give a database file or a URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AutopromptError(f"leaderboard database {path}: cannot create its folder ({err.strerror}); "
                              "give a writable database file or a URL") from None
    return f"sqlite:///{path}"


def _unusable(url: str, err: BaseException) -> AutopromptError:
    reason = getattr(err, "orig", None) or err
    return AutopromptError(f"leaderboard database {url} is unusable ({str(reason).splitlines()[0]}); "
                           "give another database file or URL")


_ENGINES: dict[str, Engine] = {}


def engine_for(db: str | Path | None = None) -> Engine:
    """An engine with the ``runs`` table (created if missing); SQLite in WAL mode with a busy wait."""
    url = db_url(db)
    if url in _ENGINES:
        return _ENGINES[url]
    try:
        engine = create_engine(url, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}))
    except (SQLAlchemyError, ImportError, ValueError) as err:
        raise _unusable(url, err) from None
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn: Any, _record: Any) -> None:  # readers never block the writer; writers wait
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
    for attempt in range(5):  # two processes creating the table at once: one wins, the other retries
        try:
            metadata.create_all(engine, checkfirst=True)
            _add_missing_columns(engine)
            break
        except SQLAlchemyError as err:
            # SQLite says "locked"; PostgreSQL "relation already exists" or a duplicate key in pg_type
            reason = str(getattr(err, "orig", None) or err)
            racing = any(word in reason for word in ("locked", "already exists", "duplicate key"))
            if attempt == 4 or not racing:
                raise _unusable(url, err) from None
            time.sleep(0.2 * (attempt + 1))
        except (ImportError, OSError) as err:  # no driver, no server
            raise _unusable(url, err) from None
    _ENGINES[url] = engine
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Bring a database made by an older version up to the ``runs`` table: each column it lacks is
    added (NULL in the rows already there), so old leaderboards keep their runs."""
    present = {c["name"] for c in inspect(engine).get_columns("runs")}
    for column in runs.columns:
        if column.name in present:
            continue
        kind = column.type.compile(engine.dialect)
        try:
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE runs ADD COLUMN "{column.name}" {kind}'))
        except SQLAlchemyError:
            # another process added it first; anything else shows when the column is still missing
            if column.name not in {c["name"] for c in inspect(engine).get_columns("runs")}:
                raise


VariantOf = Callable[[str, dict[str, Any]], str]

# one row per finished cell of a benchmark suite (`autoprompt.experiments.suite`): a cell that optuna's grid hands
# out twice, on two machines, is recorded once: the second insert fails on the primary key
suite_cells = Table(
    "suite_cells", metadata,
    Column("suite", String(200), primary_key=True), Column("cell", String(400), primary_key=True),
    Column("run_key", String(400), nullable=False), Column("worker", String(200)),
    Column("finished_at", String(40)),
)


def _listed_variant(strategy: str, params: dict[str, Any]) -> str:
    """``strategy[k=v, ...]`` over every parameter given (``calibration=none`` left out), for results
    that do not name their variant and callers that know no strategy defaults."""
    shown = {k: v for k, v in sorted(params.items()) if not (k == "calibration" and v == "none")}
    return strategy + (f"[{', '.join(f'{k}={v}' for k, v in shown.items())}]" if shown else "")


def row_from_result(result: RunRecord | dict[str, Any], variant_of: VariantOf | None = None) -> dict[str, Any]:
    """The database row of one run (a `RunRecord` or the content of its ``result.json``).

    Its leaderboard row is the ``variant`` the run recorded (the strategy and the parameters that
    differ from its defaults); for an older result without one, ``variant_of(strategy, params)``.
    """
    run = result if isinstance(result, RunRecord) else RunRecord.from_json(result)
    run_dir = Path(run.run_dir)
    protocol = f"{run.shots}-shot" if run.shots else "full data"
    protocol += f", test n={run.split_sizes.get('test', '?')}"
    return {
        "run_key": f"{run.task}/{run.strategy}/{run_dir.name}", "task": run.task,
        "protocol": protocol, "shots": run.shots, "data_seed": run.data_seed, "split": "test",
        "model": run.model, "strategy": run.strategy,
        "variant": run.variant or (variant_of or _listed_variant)(run.strategy, run.params),
        "params": json.dumps(run.params, sort_keys=True, default=str), "seed": run.seed,
        "metric": run.metric, "dev": run.scores.dev, "test": run.scores.test,
        "baseline_dev": run.baseline.dev, "baseline_test": run.baseline.test,
        "forwards": run.budget.forwards, "backwards": run.budget.backwards, "budget_used": run.budget.used,
        "budget_limit": run.budget.limit, "tokens": run.budget.tokens, "wall_s": run.wall_s,
        "trainable_params": run.details.get("trainable_parameters"),
        "versions": json.dumps(run.versions, sort_keys=True), "git_rev": run.versions.get("git", "unknown"),
        "prompt_path": str(run_dir / "prompt.json"), "prompt_fingerprint": run.prompt_fingerprint,
        "prompt_text": run.shown_prompt, "run_dir": str(run_dir), "finished_at": run.finished_at,
        "model_licence": run.model_licence, "source_model": run.source_model,
        "start_fingerprint": (run.start or {}).get("fingerprint"),
        "stages": json.dumps([{k: s[k] for k in ("strategy", "budget", "gain", "passed")}
                              for s in run.details["stages"]]) if run.details.get("stages") else None,
        "rule": _rule_of(run.prompt), "search_dtype": run.search_dtype,
    }


def _rule_of(prompt: dict[str, Any]) -> str:
    """The decision rule a saved prompt (or every member of an ensemble) is read by."""
    members = [m for m in prompt.get("ensemble") or [prompt] if isinstance(m, dict)]
    names = {m["rule"] if isinstance(m.get("rule"), str) else (m.get("rule") or {}).get("name", "direct")
             for m in members}
    return names.pop() if len(names) == 1 else "mixed"


def record(result: RunRecord | dict[str, Any], db: str | Path | None = None,
           variant_of: VariantOf | None = None) -> bool:
    """Add one finished run (a `RunRecord` or its ``result.json``) in one transaction; False if it was
    already there."""
    engine = engine_for(db)
    row = row_from_result(result, variant_of)
    try:
        with engine.begin() as conn:
            conn.execute(runs.insert().values(**row))
        return True
    except IntegrityError:
        return False  # this run folder is recorded already
    except SQLAlchemyError as err:
        raise _unusable(str(engine.url), err) from None


def record_cell(result: RunRecord, suite: str, cell: str, worker: str, db: str | Path | None = None) -> bool:
    """Record a suite cell's run and mark the cell done, in one transaction; False (nothing written)
    if the cell was recorded already (by another worker)."""
    engine = engine_for(db)
    row = row_from_result(result)
    try:
        with engine.begin() as conn:
            conn.execute(suite_cells.insert().values(suite=suite, cell=cell, run_key=row["run_key"], worker=worker,
                                                     finished_at=result.finished_at))
            if conn.execute(select(runs.c.id).where(runs.c.run_key == row["run_key"])).first() is None:
                conn.execute(runs.insert().values(**row))
        return True
    except IntegrityError:
        return False  # this cell is recorded already: the grid handed it out twice
    except SQLAlchemyError as err:
        raise _unusable(str(engine.url), err) from None


def recorded_cells(suite: str, db: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The finished cells of ``suite``: cell → its run key, worker and time."""
    engine = engine_for(db)
    try:
        with engine.connect() as conn:
            found = conn.execute(select(suite_cells).where(suite_cells.c.suite == suite))
            return {r.cell: {"run_key": r.run_key, "worker": r.worker, "finished_at": r.finished_at} for r in found}
    except SQLAlchemyError as err:
        raise _unusable(str(engine.url), err) from None


def import_runs(folder: str | Path, db: str | Path | None = None,
                variant_of: VariantOf | None = None) -> tuple[int, int]:
    """Record every ``result.json`` under ``folder``; returns (added, already there).

    ``variant_of`` names the leaderboard row of results too old to name it (`row_from_result`).
    """
    root = Path(folder)
    if not root.exists():
        raise AutopromptError(f"{root} does not exist; give the folder that holds the run folders")
    engine_for(db)  # an unusable database is reported before any file is read
    added = seen = 0
    skipped: list[str] = []
    for path in sorted(root.rglob("result.json")):
        try:
            result = read_user_json(path, "result file")
            result["run_dir"] = str(path.parent)  # where it is now, not where it was made
            run = RunRecord.from_json(result)
        except AutopromptError as err:  # a torn or foreign file is not a finished run: said, not fatal
            skipped.append(str(err) if str(path) in str(err) else f"result file {path}: {err}")
            continue
        fresh = record(run, db, variant_of)  # a database that fails is an error, not a skipped file
        added, seen = (added + 1, seen) if fresh else (added, seen + 1)
    for reason in skipped:
        events.warn(f"skipped: {reason}")
    return added, seen


def load_rows(db: str | Path | None = None, task: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The recorded runs (optionally of one task / model) as dicts."""
    query = select(runs)
    if task:
        query = query.where(runs.c.task == task)
    if model:
        query = query.where(runs.c.model == model)
    engine = engine_for(db)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query.order_by(runs.c.id))]
    except SQLAlchemyError as err:
        raise _unusable(str(engine.url), err) from None
