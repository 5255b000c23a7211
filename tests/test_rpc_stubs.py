"""The generated gRPC code in kfault_api.rpc is what proto/ compiles to today."""
import os
import re

from kfault_api.rpc import generate

ROOT = os.path.join(os.path.dirname(__file__), "..")
RPC = os.path.join(ROOT, "api", "kfault_api", "rpc")


def without_versions(text):
    """The code minus the lines naming the generator's version, which move with grpcio-tools
    releases while the API stays the same."""
    return [line for line in text.splitlines()
            if not re.search(r"Protobuf Python Version|GRPC_GENERATED_VERSION =|^\s+\d+,$|^\s+'',?$", line)]


def test_generated_code_matches_the_proto(tmp_path):
    generate.generate(os.path.join(ROOT, "proto"), str(tmp_path))
    for name in ("agent_pb2.py", "agent_pb2_grpc.py"):
        with open(os.path.join(RPC, name), encoding="utf-8") as committed, \
                open(tmp_path / "kfault_api" / "rpc" / name, encoding="utf-8") as fresh:
            assert without_versions(committed.read()) == without_versions(fresh.read()), \
                f"{name} is stale: run make proto"
