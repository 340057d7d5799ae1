"""The rules of the house (README's layout section), read from the source: who may import whom.

Every import form counts: ``import a.b``, ``from a.b import c``, ``from a import b`` (a module),
relative imports, and imports inside functions.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "autoprompt"

# lower layers never import higher ones (README's layout; DESIGN's arrows): cli -> api -> experiments and
# the report -> search -> the leaderboard -> scoring -> backends -> prompts/tasks -> the basics. The first
# layer naming a module (or a package above it) holds it: the run record and versions sit with the basics.
LAYERS = [
    {"autoprompt.errors", "autoprompt.io", "autoprompt.events", "autoprompt.schema", "autoprompt.results.versions",
     "autoprompt.results.record", "autoprompt.scoring.metrics", "autoprompt.scoring.text_metrics"},
    {"autoprompt.prompts", "autoprompt.tasks", "autoprompt.scoring.scores"},
    {"autoprompt.backends"},
    {"autoprompt.scoring"},
    {"autoprompt.results.leaderboard"},
    {"autoprompt.search"},
    {"autoprompt.experiments", "autoprompt.results", "autoprompt.testing"},
    {"autoprompt.api"},
    {"autoprompt.cli", "autoprompt.__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, as dotted names (``from pkg import mod`` names ``pkg.mod``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names = set()
            for alias in node.names:  # `from autoprompt.scoring import metrics` imports a module
                candidate = f"{base}.{alias.name}"
                if (REPO / Path(*candidate.split("."))).with_suffix(".py").is_file() or \
                        (REPO / Path(*candidate.split(".")) / "__init__.py").is_file():
                    names.add(candidate)
            # the package itself only where a name comes from its __init__ (sub-packages re-export nothing)
            found |= names if names and len(names) == len(node.names) else {base, *names}
    return found


def layer(module: str) -> int | None:
    for i, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    return None


CORE_FILES = sorted(CORE.rglob("*.py"))


def test_every_core_module_has_a_layer():
    assert [module_name(p) for p in CORE_FILES if layer(module_name(p)) is None] in ([], ["autoprompt"])


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_arrows_point_down(path):
    """No core module imports a higher layer; only the CLI imports the API; nothing imports the CLI."""
    here = layer(module_name(path))
    if here is None:  # the package's __init__ re-exports the public API
        return
    for target in imports(path):
        if not target.startswith("autoprompt.") or target.startswith(module_name(path) + "."):
            continue
        there = layer(target)
        assert there is not None and there <= here, f"{module_name(path)} imports {target} (a higher layer)"


def test_core_never_imports_searchers():
    for path in CORE_FILES:
        bad = {m for m in imports(path) if m.split(".")[0] == "searchers" or m.startswith("autoprompt.searchers")}
        assert not bad, f"{path} imports {bad}"


def test_the_strategies_install_as_autoprompt_plugins_not_as_a_package_of_their_own():
    """searchers/ installs as `autoprompt.searchers` (pyproject's package-dir); the package list names every
    folder with an ``__init__.py`` (a new sub-package left out would be missing from the wheel)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"autoprompt.searchers": "searchers"}
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in [*CORE.rglob("__init__.py"),
                                                                    *(REPO / "searchers").rglob("__init__.py")]}
    expected = {f"autoprompt.{f}" if f.split(".")[0] == "searchers" else f for f in folders}
    assert set(setuptools["packages"]) == expected
    assert not any(p == "searchers" or p.startswith("searchers.") for p in setuptools["packages"])
    entry_points = config["project"]["entry-points"]["autoprompt.searchers"]
    assert all(target.startswith("autoprompt.searchers.") for target in entry_points.values())


def test_searchers_import_only_public_api():
    public = {"autoprompt", "autoprompt.search", "autoprompt.search.selection"}
    for path in (REPO / "searchers").rglob("*.py"):
        for module in imports(path):
            assert not module.startswith("autoprompt") or module in public, f"{path.name} imports {module}"


def test_no_import_cycles():
    graph = {module_name(p): {m for m in imports(p) if m.startswith("autoprompt")} for p in CORE_FILES}
    graph["autoprompt"] = set()  # the package root only re-exports: importing it is importing what it lists
    cycles = []

    def visit(node: str, path: list[str], done: set[str]) -> None:
        if node in path:
            cycles.append([*path[path.index(node):], node])
            return
        if node in done or node not in graph:
            return
        for target in sorted(graph[node]):
            if target in (node, node.rpartition(".")[0]):  # a package's own name; its own re-exports
                continue
            visit(target, [*path, node], done)
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [], done)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def _raised_text(node: ast.Raise) -> str:
    """The literal text of ``raise AutopromptError(...)``'s message (f-string parts included)."""
    call = node.exc
    if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "AutopromptError"):
        return ""
    return " ".join(n.value for arg in call.args for n in ast.walk(arg)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str))


@pytest.mark.parametrize("path", [p for p in CORE_FILES if not module_name(p).startswith(("autoprompt.cli",
                                                                                         "autoprompt.cli.terminal"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_core_errors_name_no_cli_flags(path):
    """Core messages name settings as the API does (```data_seed```); the CLI words them as flags."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise):
            text = re.sub(r"`[^`]*`", "", _raised_text(node))  # a quoted shell command may have flags
            assert not re.search(r"(?<![\w-])--[a-z]", text), f"{path.name}:{node.lineno} names a flag: {text!r}"


def test_the_cli_words_named_settings_as_flags():
    from autoprompt.cli import _as_flag  # noqa: PLC0415
    from autoprompt.errors import AutopromptError  # noqa: PLC0415

    err = AutopromptError("`data_seed` 99 has no split; use `shots=16` or lower `lr`, set `clip=1` (`other`)",
                          params=("lr", "clip"))
    assert str(err) == "`data_seed` 99 has no split; use `shots=16` or lower `lr`, set `clip=1` (`other`)"
    assert err.worded(_as_flag) == "--data-seed 99 has no split; use --shots 16 or lower --param lr, set " \
                                   "--param clip=1 (`other`)"


def test_the_package_root_shows_only_the_public_face():
    """The root keeps the public face and the files modules; everything else lives in a sub-package."""
    root = sorted(p.stem for p in CORE.glob("*.py"))
    assert root == ["__init__", "errors", "events", "io", "schema"], root
    packages = sorted(p.parent.name for p in CORE.glob("*/__init__.py"))
    assert packages == ["api", "backends", "cli", "experiments", "prompts", "results", "scoring", "search", "tasks",
                        "testing"], packages
