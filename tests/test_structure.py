"""The code's shape: no import cycle in dab/, no import inside a function except of an optional
dependency, and a family's groups read once per run."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dab.registry import Option
from dab.suite.families import FAMILIES

from conftest import REPO, small_overrides

OPTIONAL = {"torchsort", "fcntl"}  # an optional extra; a POSIX-only module


def modules() -> dict[str, ast.Module]:
    out = {}
    for path in (REPO / "dab").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def imported(node: ast.AST, package: str) -> list[str]:
    """The modules an import statement names (relative imports resolved against ``package``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
        return [base, *(f"{base}.{a.name}" for a in node.names)]
    return []


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, tree in mods.items():
        package = name if (REPO / Path(*name.split("."), "__init__.py")).exists() else name.rsplit(".", 1)[0]
        graph[name] = {m for node in tree.body for m in imported(node, package) if m in mods and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (depth-first search)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_dab():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_no_import_inside_a_function_but_of_an_optional_dependency():
    found = []
    for name, tree in modules().items():
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    names = imported(node, name)
                    if names and names[0].split(".")[0] not in OPTIONAL:
                        found.append(f"{name}.{fn.name}: {names[0]}")
    assert not found, found


def test_a_family_s_groups_are_read_once_per_run(main_inprocess, monkeypatch, tmp_path):
    """train.py parses the config once: the family's parse runs once and each group's option is
    read once (Option.args), however many modules later use them."""
    family = FAMILIES["sort"]
    calls: list[str] = []
    parse, args = family.parse, Option.args
    monkeypatch.setattr(family, "parse", lambda values: calls.append("parse") or parse(values))
    monkeypatch.setattr(Option, "args", lambda self, values=None, where=None: calls.append(where) or
                        args(self, values, where))
    code, _, err = main_inprocess("+experiment=sort_t5", *small_overrides(tmp_path / "runs", steps=2),
                                  f"hydra.run.dir={tmp_path / 'run'}")
    assert code == 0, err
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert sorted(calls) == ["dab", "dataset", "hard_fn", "model", "parse"], calls  # dab: the estimator's settings


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_has_parse_and_build(family):
    module = FAMILIES[family]
    assert callable(module.parse) and callable(module.build) and hasattr(module, "MODELS")
