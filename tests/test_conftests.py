"""The tests' own rooms: each area's conftest.py holds only fixtures and hooks, helpers live in
modules under tests/ (kube, doubles, victims, features), and no test or bench imports a conftest."""
import ast
import glob
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")


def python_files(*patterns):
    return sorted(path for pattern in patterns for path in glob.glob(os.path.join(ROOT, pattern), recursive=True))


def is_fixture(node):
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def test_no_test_or_bench_imports_a_conftest():
    importers = []
    for path in python_files("tests/**/*.py", "bench/**/*.py"):
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[-1] == "conftest" for name in names):
                importers.append(os.path.relpath(path, ROOT))
    assert importers == []


def test_a_conftest_defines_only_fixtures_and_hooks():
    conftests = python_files("tests/**/conftest.py")
    assert len(conftests) >= 2
    helpers = []
    for path in conftests:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        helpers += [f"{os.path.relpath(path, ROOT)}: {node.name}" for node in tree.body
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and not node.name.startswith("pytest_") and not is_fixture(node)]
    assert helpers == [], "helpers belong in a module under tests/ (kube, doubles, victims, features)"
