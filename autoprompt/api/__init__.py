"""The Python API behind every CLI command: load, score, search, report as plain JSON-able values.

`scoring` scores a prompt (`evaluate`, `predict`, `build_prompt`, `describe_tasks`); `running` runs the
work that writes run folders (`search` and its `estimate`, `tune`, `transfer`, `suite_run`, `import_runs`). Both are the
public face: import from ``autoprompt.api`` (or ``autoprompt``).
"""

from autoprompt.api.running import estimate, import_runs, search, suite_run, transfer, tune
from autoprompt.api.scoring import build_prompt, describe_tasks, evaluate, predict

__all__ = ["build_prompt", "describe_tasks", "estimate", "evaluate", "import_runs", "predict", "search", "suite_run",
           "transfer", "tune"]
