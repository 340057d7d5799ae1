"""Backends by name: ``load_model("scheme:target")`` calls the loader registered as ``scheme``.

A package adds a backend (a llama.cpp or vLLM server, an API model) without touching the core: an entry
point in the ``autoprompt.backends`` group, or `register_backend` in-process. A loader is called as
``loader(target, device=..., max_length=..., length_norm=...)`` and returns a `ScoringModel` (and
`GradientModel` / `TextModel` where it can do more). Registered as an importable ``"module:attr"``
spec, a backend also reaches the worker processes ``tune`` and ``suite`` spawn (`carried`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from typing import Any

from autoprompt.backends.protocol import ScoringModel
from autoprompt.errors import AutopromptError

ENTRY_POINT_GROUP = "autoprompt.backends"
Loader = Callable[..., ScoringModel]
_registered: dict[str, Loader | str] = {}


def load_spec(spec: str) -> Any:
    """The object an importable ``"package.module:attribute"`` spec names."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise AutopromptError(f"{spec!r} is not an importable spec; write it as 'package.module:attribute'")
    try:
        target: Any = importlib.import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as err:
        raise AutopromptError(f"cannot import {spec!r} ({err}); is its package installed or on sys.path?") from None
    return target


def register_backend(scheme: str, loader: Loader | str) -> None:
    """Make ``load_model("<scheme>:<target>")`` call ``loader`` in this process (a callable, or a
    ``"module:attr"`` spec imported when first used, which spawned workers can import too)."""
    if not scheme.isidentifier():
        raise AutopromptError(f"backend name {scheme!r} must be a Python identifier (letters, digits, _)")
    _registered[scheme] = loader


def unregister_backend(scheme: str) -> None:
    """Forget a backend `register_backend` added (installed ones stay)."""
    _registered.pop(scheme, None)


def backend_loader(scheme: str) -> Loader | None:
    """The loader registered as ``scheme`` (in-process first, then the installed entry points), or None."""
    found = _registered.get(scheme)
    if found is None:
        points = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == scheme]
        return points[0].load() if points else None
    loader = load_spec(found) if isinstance(found, str) else found
    if not callable(loader):
        raise AutopromptError(f"backend {scheme!r} is registered as {found!r}, which is not callable")
    return loader


def available_backends() -> list[str]:
    """The names ``scheme:`` model names may start with."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} | set(_registered))


def carried() -> dict[str, str]:
    """The in-process registrations a spawned worker can repeat: those made with an importable spec, or
    with a module-level function (named by its module and name)."""
    out = {}
    for scheme, loader in _registered.items():
        spec = loader if isinstance(loader, str) else _spec_of(loader)
        if spec is not None:
            out[scheme] = spec
    return out


def _spec_of(obj: Any) -> str | None:
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    return f"{module}:{name}" if module and module != "__main__" and "<" not in name else None
