"""Continuous prompt parameters: vectors at ``[S]`` slots and per-layer key/value prefixes.

A `SoftPrompt` is what a continuous-prompt search produces and what the evaluator injects:

* ``slots`` ``[S, H]`` — input vectors placed at the template's ``[S]`` slots, in order (prompt
  tuning, P-tuning v1: a prompt encoder's output is fixed once trained, so only its output is
  needed to score);
* ``prefix`` ``[L, 2, K, P, D]`` — keys and values prepended at every layer (P-tuning v2 /
  prefix-tuning): L layers, key/value, K key-value heads, P prefix positions, D head size;
* ``head`` ``[C, H + 1]`` — a linear classifier on what the LM head reads at ``[P]`` (P-tuning v2's
  "back to [CLS]"): one row per class, in the task's label order, its bias in the last column. A
  prompt with a head has no label words: the head, not a verbalizer, scores the classes;
* ``tasks`` ``{name: [L, 2, K, Pt, D]}`` — a task set's per-task part: prefix positions owned by one
  member task, appended to the shared ``prefix`` for that member's inputs only (`for_task`).

Saved as ``soft.safetensors`` beside ``prompt.json`` (the prompt's ``soft`` names it). The
`digest` covers the tensors' contents, so a prompt's fingerprint is the same in memory and on disk.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from autoprompt.errors import AutopromptError
from autoprompt.io import atomic_write_bytes

SOFT_FILE = "soft.safetensors"  # the name beside prompt.json


@dataclass(frozen=True, eq=False)
class SoftPrompt:
    """Trained continuous-prompt tensors (see the module docstring for shapes).

    Args:
        slots: ``[S, H]`` vectors at the ``[S]`` slots, or None.
        prefix: ``[L, 2, K, P, D]`` per-layer key/value prefix, or None.
        meta: provenance (mode, model, trainable parameter count); saved in the file header.
        head: ``[C, H + 1]`` a linear classification head at ``[P]`` (weights, then the bias), or None.
        tasks: per member task of a task set, ``[L, 2, K, Pt, D]`` prefix positions of its own, or None.
    """

    slots: Tensor | None = None
    prefix: Tensor | None = None
    meta: dict[str, Any] | None = None
    head: Tensor | None = None
    tasks: Mapping[str, Tensor] | None = None

    def __post_init__(self) -> None:
        if self.slots is None and self.prefix is None and self.head is None:
            raise AutopromptError("a soft prompt needs slot vectors, a key/value prefix or a classification head")
        if self.head is not None and self.head.dim() != 2:
            raise AutopromptError(f"a classification head must be [C, H + 1], got shape {list(self.head.shape)}")
        if self.slots is not None and self.slots.dim() != 2:
            raise AutopromptError(f"soft slot vectors must be [S, H], got shape {list(self.slots.shape)}")
        if self.prefix is not None and (self.prefix.dim() != 5 or self.prefix.shape[1] != 2):
            raise AutopromptError(f"a key/value prefix must be [L, 2, K, P, D], got shape {list(self.prefix.shape)}")
        for name, part in (self.tasks or {}).items():
            if self.prefix is None or part.dim() != 5 or part.shape[:3] != self.prefix.shape[:3] \
                    or part.shape[4] != self.prefix.shape[4]:
                raise AutopromptError(f"task {name!r}'s prefix part must be [L, 2, K, Pt, D] beside a shared prefix "
                                      f"{None if self.prefix is None else list(self.prefix.shape)}, got "
                                      f"{list(part.shape)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        """The member tasks with a part of their own (empty: the prompt is the same for every input)."""
        return tuple(self.tasks or ())

    def for_task(self, name: str) -> SoftPrompt:
        """The soft prompt member ``name`` scores with: the shared prefix, then its own positions."""
        if not self.tasks:
            return self
        if name not in self.tasks:
            raise AutopromptError(f"this soft prompt has per-task parts for {', '.join(self.tasks)}, not for "
                                  f"{name or 'an input of no task'}; score it on one of those tasks' inputs")
        assert self.prefix is not None  # checked in __post_init__
        prefix = torch.cat([self.prefix, self.tasks[name].to(self.prefix)], dim=3)   # [L, 2, K, P + Pt, D]
        return SoftPrompt(self.slots, prefix, {**(self.meta or {}), "task": name}, self.head)

    @property
    def num_slots(self) -> int:
        return 0 if self.slots is None else self.slots.shape[0]

    @property
    def prefix_length(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[3]

    def tensors(self) -> dict[str, Tensor]:
        out = {}
        if self.slots is not None:
            out["slots"] = self.slots.detach().float().cpu().contiguous()
        if self.prefix is not None:
            out["prefix"] = self.prefix.detach().float().cpu().contiguous()
        if self.head is not None:
            out["head"] = self.head.detach().float().cpu().contiguous()
        for name, part in (self.tasks or {}).items():
            out[f"task.{name}"] = part.detach().float().cpu().contiguous()
        return out

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor], meta: dict[str, Any] | None = None) -> SoftPrompt:
        """The inverse of `tensors`: ``task.<name>`` entries are the per-task parts, in the member order
        ``meta["tasks"]`` records (safetensors files keep their tensors sorted by name)."""
        found = {k.removeprefix("task.") for k in tensors if k.startswith("task.")}
        saved = [name for name in (meta or {}).get("tasks", []) if name in found]
        tasks = {name: tensors[f"task.{name}"] for name in saved + sorted(found - set(saved))}
        return cls(tensors.get("slots"), tensors.get("prefix"), meta, tensors.get("head"), tasks or None)

    def head_logits(self, features: Tensor) -> Tensor:
        """``[B, C]`` the head's class logits for ``[B, H]`` features at ``[P]``."""
        assert self.head is not None  # callers check `head` first
        head = self.head.to(device=features.device, dtype=features.dtype)
        return features @ head[:, :-1].T + head[:, -1]

    @functools.cached_property
    def digest(self) -> str:
        """A hash of the tensors' values (not of the file's bytes or the metadata)."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.tensors().items()):
            h.update(f"{name}:{list(tensor.shape)}".encode())
            h.update(tensor.numpy().tobytes())
        return h.hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        """Write the tensors as safetensors, atomically."""
        from safetensors.torch import save  # noqa: PLC0415

        meta = {"meta": json.dumps({**(self.meta or {}), **({"tasks": list(self.tasks)} if self.tasks else {})},
                                   default=str)}
        atomic_write_bytes(path, save(self.tensors(), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> SoftPrompt:
        """Read a ``soft.safetensors`` file; a missing or corrupt file is a one-line error."""
        return _load_cached(str(Path(path).resolve()), Path(path).stat().st_mtime_ns if Path(path).exists() else 0)

    def nearest(self, embeddings: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
        """Cosine ``[S, k]`` and ids ``[S, k]`` of the vocabulary tokens nearest to each slot vector."""
        if self.slots is None:
            raise AutopromptError("a key/value prefix has no input vectors to read out as tokens")
        e = embeddings.detach()                                                             # [V, H]
        s = torch.nn.functional.normalize(self.slots.detach().float().to(e.device), dim=-1)  # [S, H]
        # divided by the rows' norms [V] rather than normalising a copy of the whole matrix (113 MB on
        # a 49k-token vocabulary: the largest allocation of a `ptuning` search's readout)
        norms = torch.linalg.vector_norm(e, dim=-1).float().clamp_min(1e-12)               # [V]
        cosine: Tensor = (s.to(e.dtype) @ e.T).float() / norms                             # [S, V]
        return cosine.topk(k, dim=-1)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, _mtime: int) -> SoftPrompt:
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load  # noqa: PLC0415

    file = Path(path)
    if not file.is_file():
        raise AutopromptError(f"soft prompt file {file} does not exist; keep soft.safetensors beside prompt.json")
    data = file.read_bytes()
    try:
        tensors = load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(json.loads(data[8 : 8 + header_len]).get("__metadata__", {}).get("meta", "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as err:
        raise AutopromptError(f"soft prompt file {file} is corrupt ({err}); rerun the search that made it") from None
    if not {"slots", "prefix", "head"} & tensors.keys():
        raise AutopromptError(f"soft prompt file {file} holds no 'slots', 'prefix' or 'head' tensor")
    bad = sorted(name for name, t in tensors.items() if t.is_floating_point() and not bool(t.isfinite().all()))
    if bad:  # a NaN vector would label every input with class 0 at NaN probability
        raise AutopromptError(f"soft prompt file {file}: tensor(s) {bad} hold NaN or infinite values; rerun the search "
                              "that made it")
    return SoftPrompt.from_tensors(tensors, meta)


def resolve_soft(soft: str | SoftPrompt | None) -> SoftPrompt | None:
    """The tensors of a prompt's ``soft`` field (a path is loaded once per process)."""
    if soft is None or isinstance(soft, SoftPrompt):
        return soft
    return SoftPrompt.load(soft)
