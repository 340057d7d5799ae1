"""A soft prompt checked against what it is scored with: its template's ``[S]`` slots, the model's
embedding width and layers, and the task's classes (a classification head)."""

from __future__ import annotations

from typing import Any

from autoprompt.backends import ScoringModel, gradient_model
from autoprompt.errors import AutopromptError
from autoprompt.prompts import Prompt
from autoprompt.prompts.soft import SoftPrompt, resolve_soft
from autoprompt.tasks.base import Task


def checked_soft(prompt: Prompt, model: ScoringModel, task: Task) -> SoftPrompt | None:
    """``prompt``'s soft tensors (loaded where saved beside it), checked against its template, the model
    (vector width, prefix layers) and the task (a classification head's classes); None for a discrete prompt."""
    soft = resolve_soft(prompt.soft)
    slots = prompt.template.num_soft
    if soft is None:
        if slots:
            raise AutopromptError(f"template {prompt.template.source!r} has {slots} [S] slots but the prompt has "
                                  "no soft tensors; train them (`strategy=ptuning`) or remove the [S] slots")
        return None
    lm = gradient_model(model, "score soft prompts")
    if soft.num_slots != slots:
        raise AutopromptError(f"template {prompt.template.source!r} has {slots} [S] slots but its soft prompt "
                              f"holds {soft.num_slots} vectors; use the prompt.json saved with the vectors")
    hidden = lm.embedding_matrix().shape[1]
    if soft.slots is not None and soft.slots.shape[1] != hidden:
        raise AutopromptError(f"the soft prompt's vectors have size {soft.slots.shape[1]} but {model.name}'s "
                              f"embeddings have {hidden}; score it with the model it was trained on")
    if soft.prefix is not None:
        lm.check_prefix()
        config: Any = getattr(lm.model, "config", None)
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
        if layers is not None and soft.prefix.shape[0] != layers:
            raise AutopromptError(f"the prompt's key/value prefix has {soft.prefix.shape[0]} layers but "
                                  f"{model.name} has {layers}; score it with the model it was trained on")
    if soft.head is not None:
        named = (soft.meta or {}).get("labels")
        if named is not None and tuple(named) != tuple(task.labels):
            raise AutopromptError(f"the prompt's classification head classifies {list(named)}, not task "
                                  f"{task.name}'s labels {list(task.labels)}; train it for this task")
        width = lm.output_embedding_matrix().shape[1] + 1
        if soft.head.shape != (len(task.labels), width):
            raise AutopromptError(f"the prompt's classification head is {list(soft.head.shape)} but task "
                                  f"{task.name} on {model.name} needs [{len(task.labels)}, {width}] "
                                  "(classes x features + bias); train it for this task and model")
    return soft
