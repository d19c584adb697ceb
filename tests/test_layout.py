"""The layout the code promises (docs/architecture.md): layers import only downward, no import
circles, a generic engine, small modules, and every capability keeping the same contract."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: a package may import its own layer's and lower layers' packages, never higher.
LAYERS = [["engine"], ["store", "analysers"], ["ui"], ["tabs"], ["app"], ["launch"]]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
CONTRACT = ["TITLE", "GROUP", "specs", "job_kinds", "unavailable", "check"]
MAX_LINES = 400


def sources() -> list[Path]:
    files = [ROOT / "launch.py"]
    for package in RANK:
        files += sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports (relative imports resolved), at any depth of the file.
    `from package import submodule` imports the submodule, not the package's other names."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = {f"{base}.{alias.name}" for alias in node.names}
            submodules = {n for n in names if is_module(n)}
            found |= submodules | ({base} if names - submodules else set())
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def local(module: str) -> bool:
    return module.split(".")[0] in RANK


def test_layers_import_only_downward():
    upward = []
    for path in sources():
        mine = module_name(path).split(".")[0]
        for target in filter(local, imports(path)):
            if RANK[target.split(".")[0]] > RANK[mine]:
                upward.append(f"{path.relative_to(ROOT)} imports {target}")
    assert upward == []


def test_capabilities_do_not_import_each_other():
    crossing = []
    for path in (ROOT / "tabs").rglob("*.py"):
        parts = module_name(path).split(".")
        if len(parts) < 2:
            continue
        for target in imports(path):
            other = target.split(".")
            if other[0] == "tabs" and len(other) > 1 and (ROOT / "tabs" / other[1]).is_dir() and other[1] != parts[1]:
                crossing.append(f"{path.relative_to(ROOT)} imports {target}")
    assert crossing == []


def test_no_import_circles():
    modules = {module_name(p): p for p in sources()}
    graph = {m: {t for t in imports(p) if t in modules and t != m} for m, p in modules.items()}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_engine_imports_no_ui_or_model_family_library():
    banned = ("gradio", "diffusers", "transformers", "huggingface_hub")
    found = [f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "engine").rglob("*.py")
             for m in imports(p) if m.split(".")[0] in banned]
    assert found == []


def test_modules_are_small():
    long = {str(p.relative_to(ROOT)): n for p in sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


@pytest.mark.parametrize("name", importlib.import_module("tabs").CAPABILITIES)
def test_every_capability_keeps_the_contract(name):
    capability = importlib.import_module(f"tabs.{name}")
    assert [attr for attr in CONTRACT if not hasattr(capability, attr)] == []
    assert (ROOT / "tabs" / name / "tab.py").is_file()
    assert "gradio" not in {m.split(".")[0] for m in imports(ROOT / "tabs" / name / "__init__.py")}


def test_every_group_is_named_and_its_members_sit_together():
    import itertools

    import tabs
    groups = [c.GROUP for c in tabs.capabilities()]
    runs = [g for g, _ in itertools.groupby(groups) if g is not None]
    assert len(runs) == len(set(runs)), f"a group split in two tabs: {runs}"
    assert set(runs) == set(tabs.GROUPS), (runs, list(tabs.GROUPS))
