"""What each package may import: the layering CONTRIBUTING.md's "Where things are" describes, checked.

  kfault_api         the shared model: standard library, yaml, grpc/protobuf; nothing of ours
  kfault_agent       kfault_api; bcc only in kernel/compile.py; never kopf, kubernetes, the controller or the lab
  kfault_controller  kfault_api; never the agent, bcc or pyroute2
  kfault_lab         anything (it drives the agent), but nothing imports it except tests and bench
"""
import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
PACKAGES = {"kfault_api": "api", "kfault_agent": "agent", "kfault_controller": "controller", "kfault_lab": "lab"}
FORBIDDEN = {
    "kfault_api": {"kfault_agent", "kfault_controller", "kfault_lab", "bcc", "pyroute2", "kopf", "kubernetes",
                   "prometheus_client"},
    "kfault_agent": {"kfault_controller", "kfault_lab", "kopf", "kubernetes"},
    "kfault_controller": {"kfault_agent", "kfault_lab", "bcc", "pyroute2"},
}
# The one module of the agent that may import bcc: the compiler, run in a process of its own
# (kernel/loader.py loads what it cached with plain bpf() calls; LLVM stays out of the agent).
BCC_USERS = {"kfault_agent.kernel.compile"}
# Who resolves host names of externalTargets: the network engine, never policy or the kernel layer.
NAME_RESOLVERS = {"kfault_agent.engines.netfault"}
# The controller's pure rooms: what a resource asks, decided without a cluster, an agent or kopf.
CONTROLLER_PURE = {"kfault_controller.cron", "kfault_controller.windows", "kfault_controller.selection",
                   "kfault_controller.status", "kfault_controller.schedule.runs", "kfault_controller.settings"}


def modules(package):
    top = os.path.join(ROOT, PACKAGES[package])
    for folder, _, files in os.walk(os.path.join(top, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, top)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                yield dotted, path


def imported_roots(path):
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_what_its_layer_allows(package):
    wrong = sorted(f"{module} imports {name}" for module, path in modules(package)
                   for name in imported_roots(path) if name.split(".")[0] in FORBIDDEN[package])
    assert wrong == []


def test_only_the_loader_imports_bcc():
    users = {module for package in PACKAGES for module, path in modules(package)
             if any(name.split(".")[0] == "bcc" for name in imported_roots(path))}
    assert users == BCC_USERS


def imports_module(path, dotted):
    """Does the file import `dotted` (import a.b, from a.b import x, from a import b)?"""
    parent, _, leaf = dotted.rpartition(".")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == dotted for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (
                node.module == dotted or (node.module == parent and any(a.name == leaf for a in node.names))):
            return True
    return False


def test_only_the_network_engine_resolves_peer_names():
    users = {module for module, path in modules("kfault_agent") if imports_module(path, "kfault_agent.peer_names")}
    assert users == NAME_RESOLVERS


def test_the_controllers_pure_rooms_reach_no_cluster_agent_or_kopf():
    rooms = dict(modules("kfault_controller"))
    assert CONTROLLER_PURE <= rooms.keys(), "a pure room was moved or renamed: update CONTROLLER_PURE"
    wrong = sorted(f"{module} imports {name}" for module in CONTROLLER_PURE for name in imported_roots(rooms[module])
                   if name.split(".")[0] in {"kopf", "kubernetes", "grpc"}
                   or name in {"kfault_controller.agents", "kfault_controller.cluster", "kfault_controller.placement"})
    assert wrong == []
