"""The file I/O datapath in a process of its own, for tests that change what that process sees
(lab/kfault_lab/headerless.py): run as `python -m tests.io_process MODE ...`, it answers in JSON lines.

  compile MECHANISM         compile iofault.c as the loader would for that errno mechanism (into
                            $KFAULT_BPF_CACHE); print the headers used and the cache entry
  inject CGROUP EXPERIMENTS load the I/O engine as the agent does; print its capabilities; place
                            the experiments (a JSON list of IOChaos documents) on the cgroup; print
                            whether the syscall tracepoints are attached; take everything back
                            when stdin closes
"""
import json
import os
import sys

from kfault_agent.engines import iofault
from kfault_agent.kernel import compile, loader, topology
from kfault_api import spec


def say(**what):
    print(json.dumps(what), flush=True)


def compile_io(mechanism):
    headers = loader.require_headers(loader.uapi_headers())
    cflags = loader.io_cflags(mechanism or None)     # "": the syscall tracepoints alone
    source = os.path.join(loader.BPF_DIR, "iofault.c")
    entry = compile.compiled(source, cflags, headers.path, loader.headers_identity(headers), loader.BPF_DIR)
    say(headers=headers.described, cflags=cflags, functions=entry["functions"])


def inject(cgroup, experiments):
    capabilities = {}
    engine = iofault.IOFaultEngine.load(capabilities, lease_s=600)
    try:
        say(capabilities={name: [c.available, c.reason] for name, c in capabilities.items()})
        target = topology.resolve_cgroup_target(f"cgroup:{cgroup}")
        for document in json.loads(experiments):
            engine.apply(spec.parse_experiment(document), target)
        say(attached=engine.datapath.attached)
        sys.stdin.read()
    finally:
        engine.close()


if __name__ == "__main__":
    {"compile": compile_io, "inject": inject}[sys.argv[1]](*sys.argv[2:])
