"""Tasks: built-in (GLUE/SuperGLUE/LM-BFF/LAMA), custom files, and the hub as a fallback."""

from __future__ import annotations

from pathlib import Path

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, Task, TaskData, carve_dev, examples_fingerprint, resolve_data_dir
from autoprompt.tasks.builtin import BUILTIN, load_builtin
from autoprompt.tasks.custom import custom_task, load_custom
from autoprompt.tasks.hub import load_from_hub
from autoprompt.tasks.lama import lama_relations, load_lama
from autoprompt.tasks.splits import LMBFF_SEEDS

__all__ = [
    "BUILTIN", "LMBFF_SEEDS", "Example", "Task", "TaskData", "carve_dev", "custom_task",
    "examples_fingerprint", "lama_relations", "list_tasks", "load_task", "resolve_data_dir",
]


def load_task(
    name: str | Path,
    data_dir: str | Path | None = None,
    shots: int | None = None,
    data_seed: int = 13,
    model: str | None = None,
) -> TaskData:
    """Load a task's splits.

    Args:
        name: a built-in name (``sst2``, ``rte``, ...), ``lama:P19``, or a path to a task TOML.
        data_dir: the local data folder; default ``AUTOPROMPT_DATA_DIR``, else the hub.
        shots: k-shot protocol (16: LM-BFF splits; 32: FewGLUE), or None for the full data.
        data_seed: which k-shot split (13/21/42/87/100), or the seed of the carved dev slice.
        model: the model the prompts are for: a built-in task's manual prompt is the one chosen on
            train for it where that differs from the default (``builtin.MODEL_PROMPTS``).

    Raises:
        AutopromptError: unknown task, missing data, or an unavailable protocol.
    """
    text = str(name)
    if shots is not None and shots < 1:
        raise AutopromptError(f"shots must be a positive number of examples per class, got {shots}")
    if text.endswith(".toml") or Path(text).suffix == ".toml":
        return load_custom(Path(text), data_seed, shots)
    key = text.lower()
    is_lama = key.startswith("lama:")
    if key not in BUILTIN and not is_lama:
        raise AutopromptError(
            f"unknown task {text!r}; choose one of {', '.join(BUILTIN)}, lama:<relation>, "
            "or a path to a task .toml"
        )
    root = resolve_data_dir(data_dir)
    if root is None:
        return load_from_hub(key, shots, data_seed)
    if is_lama:
        return load_lama(text.split(":", 1)[1].upper(), root, shots)
    return load_builtin(key, root, shots, data_seed, model)


def list_tasks() -> list[Task]:
    """The built-in tasks (LAMA relations are listed by ``lama_relations``)."""
    return [entry.task for entry in BUILTIN.values()]

