"""The trainable parts of continuous prompts: free vectors, P-tuning's prompt encoder, a key/value prefix.

Each is an ``nn.Module`` whose ``forward()`` returns the `SoftPrompt` the evaluator scores with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from autoprompt import SoftPrompt


class Slots(nn.Module):
    """Prompt tuning: the vectors themselves. ``[S, H]``."""

    def __init__(self, init: Tensor) -> None:
        super().__init__()
        self.vectors = nn.Parameter(init.clone())

    def forward(self) -> SoftPrompt:
        return SoftPrompt(slots=self.vectors)


class PromptEncoder(nn.Module):
    """P-tuning's prompt encoder: ``inputs + head(LSTM(inputs))`` (or ``inputs + head(inputs)``).

    The head's last layer starts at zero, so training starts from the init embeddings and the
    encoder learns a correction that couples the pseudo tokens.
    """

    def __init__(self, init: Tensor, kind: str, hidden: int) -> None:
        super().__init__()
        size = init.shape[1]
        self.inputs = nn.Parameter(init.clone())                                 # [S, H]
        self.lstm = nn.LSTM(size, hidden // 2, num_layers=2, bidirectional=True, batch_first=True) \
            if kind == "lstm" else None
        self.head = nn.Sequential(nn.Linear(hidden if self.lstm else size, hidden), nn.ReLU(), nn.Linear(hidden, size))
        last = cast(nn.Linear, self.head[2])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self) -> SoftPrompt:
        x = self.inputs
        h = self.lstm(x[None])[0][0] if self.lstm is not None else x           # [S, hidden]
        return SoftPrompt(slots=x + self.head(h))


class KVPrefix(nn.Module):
    """A key/value prefix ``[L, 2, K, P, D]``: free, or ``init + MLP(embedding)`` (re-parameterised)."""

    def __init__(self, init: Tensor, token_init: Tensor | None, hidden: int) -> None:
        super().__init__()
        self.shape = tuple(init.shape)
        if token_init is None:
            self.prefix = nn.Parameter(init.clone())
        else:
            self.register_buffer("base", init.clone())
            self.tokens = nn.Parameter(token_init.clone())                       # [P, H]
            out = init[:, :, :, 0].numel()                                       # L * 2 * K * D
            self.mlp = nn.Sequential(nn.Linear(token_init.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, out))
            last = cast(nn.Linear, self.mlp[2])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self) -> SoftPrompt:
        if hasattr(self, "prefix"):
            return SoftPrompt(prefix=self.prefix)
        n_layers, _, heads, length, dim = self.shape
        delta = self.mlp(self.tokens).view(length, n_layers, 2, heads, dim).permute(1, 2, 3, 0, 4)
        return SoftPrompt(prefix=self.base + delta)


class WithHead(nn.Module):
    """A prompt module (or none) plus P-tuning v2's linear classification head on the features at ``[P]``.

    ``init`` ``[C, H]`` starts the head's weights (the label words' output embeddings, so training
    starts at the verbalizer's decision), or None for P-tuning v2's random start (normal, std 0.02).
    """

    def __init__(self, prompt: nn.Module | None, classes: int, features: int, init: Tensor | None) -> None:
        super().__init__()
        self.prompt = prompt
        self.head = nn.Linear(features, classes)
        nn.init.zeros_(self.head.bias)
        if init is None:
            nn.init.normal_(self.head.weight, std=0.02)
        else:
            with torch.no_grad():
                self.head.weight.copy_(init)

    def forward(self) -> SoftPrompt:
        head = torch.cat([self.head.weight, self.head.bias[:, None]], dim=1)                 # [C, H + 1]
        return dataclasses.replace(self.prompt(), head=head) if self.prompt is not None else SoftPrompt(head=head)


class TaskParts(nn.Module):
    """A shared key/value prefix module plus each member task's own positions (a task set's per-task
    part): member ``t`` scores with the shared prefix followed by ``parts[t]`` ``[L, 2, K, Pt, D]``,
    which starts from ``inits[t]``."""

    def __init__(self, shared: nn.Module, names: Sequence[str], inits: Sequence[Tensor]) -> None:
        super().__init__()
        self.shared = shared
        self.names = list(names)
        self.parts = nn.ParameterList([nn.Parameter(init.clone()) for init in inits])

    def forward(self) -> SoftPrompt:
        shared: SoftPrompt = self.shared()
        return dataclasses.replace(shared, tasks=dict(zip(self.names, self.parts, strict=True)))
