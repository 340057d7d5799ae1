"""What a finished search leaves: `record` (`RunRecord`, its ``result.json``), `versions` (what
produced it), `leaderboard` (run records in SQLAlchemy; SQLite by default), `tables` (aggregates over
seeds), `report` (Markdown/HTML reports) and `charts` (its figures). Nothing is re-exported: the run
record never pulls in SQLAlchemy.
"""
