"""Finding strategies by name and building them from ``{"k": v}`` or the CLI's ``["k=v", ...]``.

Installed strategies are entry points of the ``autoprompt.searchers`` group (only the one asked
for is imported); `register` adds one in-process, so a notebook or a test can try a strategy
without packaging it (and `carried` hands those registrations to spawned workers).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from autoprompt.backends.registry import load_spec
from autoprompt.errors import AutopromptError
from autoprompt.search.base import Searcher

ENTRY_POINT_GROUP = "autoprompt.searchers"
_registered: dict[str, type[Searcher[Any]]] = {}


def register(cls: type[Searcher[Any]] | str, name: str | None = None) -> type[Searcher[Any]]:
    """Make a strategy available as ``name`` (default its class's ``name``) in this process; usable as a
    decorator. ``cls`` is the class or an importable ``"package.module:Class"`` spec.

    A registered name shadows an installed strategy of the same name until `unregister`. A class defined
    at a module's top level (or given by its spec) also reaches the worker processes ``tune`` and
    ``suite`` spawn (`carried`); one defined in ``__main__`` or inside a function does not.
    """
    found = load_spec(cls) if isinstance(cls, str) else cls
    if not (isinstance(found, type) and issubclass(found, Searcher) and dataclasses.is_dataclass(found)):
        raise AutopromptError(f"{found!r} is not a Searcher dataclass; subclass Searcher and add @dataclass")
    _registered[name or found.name] = found
    return found


def unregister(name: str) -> None:
    """Forget a strategy `register` added (installed ones stay)."""
    _registered.pop(name, None)


def carried() -> dict[str, str]:
    """``{name: "module:Class"}`` of the registered strategies a spawned worker can import again."""
    out = {}
    for name, cls in _registered.items():
        module, qualname = cls.__module__, cls.__qualname__
        if module != "__main__" and "<" not in qualname:
            out[name] = f"{module}:{qualname}"
    return out


def available() -> dict[str, type[Searcher[Any]]]:
    """Every strategy, by name: the installed entry points and those `register` added."""
    found: dict[str, type[Searcher[Any]]] = {ep.name: ep.load()
                                             for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return dict(sorted({**found, **_registered}.items()))


def get_strategy(name: str) -> type[Searcher[Any]]:
    """The strategy class registered as ``name`` (only that plug-in is imported)."""
    if name in _registered:
        return _registered[name]
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        names = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)} | set(_registered))
        raise AutopromptError(f"unknown strategy {name!r}; choose one of {', '.join(names) or '(none installed)'}")
    cls: type[Searcher[Any]] = found[0].load()
    return cls


def param_types(cls: type[Searcher[Any]]) -> dict[str, Any]:
    """The type of every hyper-parameter (dataclass field) of ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


def describe_params(cls: type[Searcher[Any]]) -> str:
    """``name: type = default`` for every parameter (for errors and ``autoprompt strategies``)."""
    types_ = param_types(cls)
    return ", ".join(f"{f.name}: {_type_name(types_[f.name])} = {f.default!r}"
                     for f in dataclasses.fields(cls))


def parse_bool(value: Any) -> bool:
    """``True``/``False`` from a bool or its text (``1 true yes on`` / ``0 false no off``); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def _convert(value: Any, tp: Any, key: str, cls: type[Searcher[Any]]) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ValueError
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value in (None, "none", "None") and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, cls)
            except (ValueError, TypeError):
                continue
        raise ValueError
    if tp is bool:
        return parse_bool(value)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        return int(value)
    if tp is float:
        return float(value)
    if tp is str:
        return str(value)
    raise TypeError(f"parameter {key} of {cls.name} has an unsupported type {tp}")


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``["k=v", ...]`` (the CLI's ``--param``) as a dict; a one-line error for anything else."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise AutopromptError(f"parameter {item!r} is not key=value")
        key, value = (part.strip() for part in item.split("=", 1))
        if not key:
            raise AutopromptError(f"parameter {item!r} has no name; write key=value")
        if key in out and out[key] != value:  # the last would silently win
            raise AutopromptError(f"parameter {key!r} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


def create(name: str, params: Mapping[str, Any] | Sequence[str] = ()) -> Searcher[Any]:
    """Instantiate a strategy from ``{"k": v}`` or ``["k=v", ...]``; one-line errors otherwise."""
    cls = get_strategy(name)
    if not isinstance(params, Mapping):
        params = parse_params(params)
    types_ = param_types(cls)
    converted = {}
    for key, value in params.items():
        if key not in types_:
            raise AutopromptError(f"{name} has no parameter {key!r}; valid: {describe_params(cls)}")
        try:
            converted[key] = _convert(value, types_[key], key, cls)
        except ValueError:
            raise AutopromptError(f"{name} parameter {key}={value!r} is not a valid "
                                  f"{_type_name(types_[key])}; valid: {describe_params(cls)}") from None
    try:
        return cls(**converted)
    except AutopromptError:
        raise
    except (TypeError, ValueError) as err:
        raise AutopromptError(f"{name}: {err}") from None


def variant(strategy: str, params: dict[str, Any]) -> str:
    """``strategy`` plus the parameters that differ from its defaults: ``ptuning[mode=prefix]``.

    Defaults a strategy derives from other parameters (ptuning's per-mode ``lr``) count as defaults.
    """
    try:
        cls = get_strategy(strategy)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        explicit = {k: v for k, v in params.items() if fields.get(k) is not None and fields[k] != v}
        base = dataclasses.asdict(cls(**explicit))
    except (AutopromptError, TypeError):
        explicit, base = {}, {}
    changed = {k: v for k, v in sorted(params.items()) if k in explicit or k not in base or base[k] != v}
    # a calibrated and an uncalibrated prompt never share a row, whatever the strategy's default
    changed.pop("calibration", None)
    if params.get("calibration", "none") != "none":
        changed = dict(sorted({**changed, "calibration": params["calibration"]}.items()))
    return strategy + (f"[{', '.join(f'{k}={v}' for k, v in changed.items())}]" if changed else "")


def param_docs(cls: type[Searcher[Any]]) -> dict[str, str]:
    """Each hyper-parameter's help text: its entry in the ``Args:`` section of the docstring of
    ``cls`` or of a base class (Google style), joined into one line."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        lines = inspect.cleandoc(klass.__dict__.get("__doc__") or "").splitlines()
        if "Args:" not in lines:
            continue
        name = None
        for line in lines[lines.index("Args:") + 1:]:
            if line and not line.startswith(" "):  # the next section
                break
            head, sep, text = line.strip().partition(": ")
            if line.startswith("    ") and not line.startswith("     ") and sep and head.isidentifier():
                name, docs[head] = head, text.strip()
            elif name and line.strip():
                docs[name] += " " + line.strip()
    return docs


def describe_strategy(cls: type[Searcher[Any]]) -> list[dict[str, Any]]:
    """One row per hyper-parameter: ``name``, ``type``, ``default``, ``low`` (the lowest valid value,
    if any) and ``help``."""
    types_, docs = param_types(cls), param_docs(cls)
    return [{"name": f.name, "type": _type_name(types_[f.name]), "default": f.default, "low": f.metadata.get("low"),
             "help": docs.get(f.name, "")} for f in dataclasses.fields(cls)]
