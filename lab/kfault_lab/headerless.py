"""A process that sees the node as a node without kernel headers would (COS, Bottlerocket, many
cloud images): in a mount namespace of its own, /usr/src and /lib/modules are empty, and the
headers wait where the agent image keeps its own (KFAULT_UAPI_HEADERS, manifests/Dockerfile.agent):
this node's headers package, its arch part laid over its common part as the image lays them,
mounted read-only before the rest is hidden. Its mounts go with its namespace."""
import os
import platform
import subprocess

from kfault_agent.kernel import loader

HIDE = r"""set -eu
headers=$1 build=$2 source=$3
shift 3
mkdir -p "$headers"
if [ "$source" = "$build" ]; then
    mount --bind -o ro "$build" "$headers"
else
    mount -t overlay kfault-headers -o "lowerdir=$build:$source" "$headers"
fi
mount -t tmpfs -o ro,size=4k empty /usr/src
mount -t tmpfs -o ro,size=4k empty /lib/modules
exec "$@"
"""


def node_headers():
    """(arch part, common part) of this node's headers: where /lib/modules/RELEASE/build and
    source lead (one tree twice where there is no split)."""
    build = os.path.realpath(loader.kernel_build_dir())
    source = os.path.realpath(f"/lib/modules/{platform.release()}/source")
    assert os.path.isdir(os.path.join(build, "include")), f"no headers at {loader.kernel_build_dir()} to copy"
    return build, source if os.path.isdir(source) else build


def popen(argv, headers_dir, **kwargs):
    """Start argv in such a namespace, with the headers at headers_dir."""
    build, source = node_headers()
    env = {**os.environ, loader.UAPI_HEADERS_ENV: str(headers_dir), **kwargs.pop("env", {})}
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDE, "hide",
                             str(headers_dir), build, source, *argv], env=env, **kwargs)
