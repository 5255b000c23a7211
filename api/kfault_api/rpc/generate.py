"""Regenerate this package's gRPC code from proto/kfault/agent/v1/agent.proto.

  python -m kfault_api.rpc.generate PROTO_DIR OUT_DIR     (make proto: PROTO_DIR=proto, OUT_DIR=api)

The proto is compiled as kfault_api/rpc/agent.proto, so the generated modules import each
other as kfault_api.rpc.*. tests/test_rpc_stubs.py regenerates and compares.
"""
import os
import sys


def generate(proto_dir, out_dir):
    from grpc_tools import protoc  # only where the code is regenerated (tests, make proto)

    source = os.path.join(proto_dir, "kfault", "agent", "v1")
    status = protoc.main(["protoc", f"-Ikfault_api/rpc={source}", f"--python_out={out_dir}",
                          f"--grpc_python_out={out_dir}", "kfault_api/rpc/agent.proto"])
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {source}/agent.proto")


if __name__ == "__main__":
    generate(*sys.argv[1:3])
