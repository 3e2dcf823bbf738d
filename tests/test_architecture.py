"""The one-way architecture (docs/architecture.md): layer contracts are checked by `lint-imports` (setup.cfg);
these tests add what a contract cannot say."""

import ast
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parents[1] / "edgead"
SANCTIONED_LOCAL_IMPORTS = {("edgead/runtime/torch_backend.py", "edgead.models")}  # optional PyTorch backend


def test_no_import_cycles():
    graph = grimp.build_graph("edgead")
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.find_modules_directly_imported_by(module)):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph.modules):
        if module not in state:
            visit(module, [module])


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_at_most_one_dynamic_import_site():
    sites = []
    for f in sources():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in ("importlib.import_module", "import_module", "__import__", "importlib.__import__"):
                    sites.append(f"{f.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert len(sites) <= 1, sites


def test_function_local_imports_are_optional_third_party_packages_only():
    """Hidden dependencies between edgead's own modules are what one-way layering forbids; only optional packages
    (torch for the PyTorch backend, onnxruntime, tensorrt, pycuda, pyrealsense2, matplotlib) load late."""
    found = set()
    for f in sources():
        tree = ast.parse(f.read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("edgead"):
                        found.add((str(f.relative_to(PACKAGE.parent)), node.module))
                    if isinstance(node, ast.Import):
                        found |= {(str(f.relative_to(PACKAGE.parent)), a.name) for a in node.names
                                  if a.name.startswith("edgead")}
    assert found <= SANCTIONED_LOCAL_IMPORTS, found - SANCTIONED_LOCAL_IMPORTS


def test_every_package_says_what_lives_there():
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 80, f"{init}: no docstring saying what the package holds"
