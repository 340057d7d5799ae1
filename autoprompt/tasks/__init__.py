"""Tasks: built-in (GLUE/SuperGLUE/LM-BFF/LAMA), custom files, and the hub as a fallback."""

from __future__ import annotations

from pathlib import Path

from autoprompt.errors import AutopromptError
from autoprompt.tasks.base import Example, Task, TaskData, carve_dev, examples_fingerprint, resolve_data_dir
from autoprompt.tasks.builtin import BUILTIN, load_builtin
from autoprompt.tasks.custom import custom_task, load_custom
from autoprompt.tasks.generation import E2E_TASK, load_e2e
from autoprompt.tasks.hub import load_from_hub
from autoprompt.tasks.lama import lama_relations, load_lama
from autoprompt.tasks.splits import LMBFF_SEEDS
from autoprompt.tasks.taskset import load_task_set

__all__ = [
    "BUILTIN", "E2E_TASK", "LMBFF_SEEDS", "Example", "Task", "TaskData", "carve_dev", "custom_task",
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
        name: a built-in name (``sst2``, ``rte``, ``e2e``, ...), ``lama:P19``, a path to a task TOML, or
            a comma-separated task set (``sst2,mr,cr``: one task over their union, `tasks.taskset`).
        data_dir: the local data folder; default ``AUTOPROMPT_DATA_DIR``, else the hub.
        shots: k-shot protocol (16: LM-BFF splits; 32: FewGLUE), or None for the full data; on a
            generation task the number of training references (`autoprompt.tasks.generation`).
        data_seed: which k-shot split (13/21/42/87/100), or the seed of the carved dev slice.
        model: the model the prompts are for: a built-in task's manual prompt is the one chosen on
            train for it where that differs from the default (``builtin.MODEL_PROMPTS``).

    Raises:
        AutopromptError: unknown task, missing data, or an unavailable protocol.
    """
    text = str(name)
    if shots is not None and shots < 1:
        raise AutopromptError(f"shots must be a positive number of examples per class, got {shots}")
    if "," in text:  # a task set: one prompt trained on the union (P-tuning v2's multi-task setting)
        names = [n.strip() for n in text.split(",") if n.strip()]
        return load_task_set(names, lambda n: load_task(n, data_dir, shots, data_seed, model))
    if text.endswith(".toml") or Path(text).suffix == ".toml":
        return load_custom(Path(text), data_seed, shots)
    key = text.lower()
    is_lama = key.startswith("lama:")
    if key not in BUILTIN and not is_lama and key != E2E_TASK.name:
        raise AutopromptError(
            f"unknown task {text!r}; choose one of {', '.join([*BUILTIN, E2E_TASK.name])}, lama:<relation>, "
            "or a path to a task .toml"
        )
    root = resolve_data_dir(data_dir)
    if key == E2E_TASK.name:
        if root is None:
            raise AutopromptError("e2e is read from a local data folder (<data>/e2e); set `data_dir` or "
                                  "AUTOPROMPT_DATA_DIR")
        return load_e2e(root, shots, data_seed)
    if root is None:
        return load_from_hub(key, shots, data_seed)
    if is_lama:
        return load_lama(text.split(":", 1)[1].upper(), root, shots)
    return load_builtin(key, root, shots, data_seed, model)


def list_tasks() -> list[Task]:
    """The built-in tasks (LAMA relations are listed by ``lama_relations``)."""
    return [*(entry.task for entry in BUILTIN.values()), E2E_TASK]

