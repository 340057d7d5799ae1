"""The precision a search computes in: ``fp32``, ``bf16``, or ``auto`` (bf16 where the hardware
computes it natively, else fp32).

A search ranks candidates and trains soft prompts in it (`FrozenLM.computing_in`); the gate, the final
dev/test scores and ``evaluate`` stay in fp32, so a reported number does not depend on the machine.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from autoprompt.errors import AutopromptError

DTYPES = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with
    AVX-512 BF16 or AMX (read from the CPU's feature flags, never guessed from a model name)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere, which means fp32)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def resolve_dtype(dtype: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for the setting ``dtype`` on ``device``."""
    if dtype not in DTYPES:
        raise AutopromptError(f"unknown `dtype` {dtype!r}; use auto (bf16 where the hardware has it), fp32 or bf16")
    if dtype == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return dtype
