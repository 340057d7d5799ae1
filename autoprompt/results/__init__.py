"""What a finished search leaves: `record` (`RunRecord`, its ``result.json``), `versions` (what
produced it), `leaderboard` (run records in SQLAlchemy; SQLite by default), `tables` (aggregates over seeds) and `report`
(Markdown/HTML reports). Nothing is re-exported: the run record never pulls in SQLAlchemy.
"""
