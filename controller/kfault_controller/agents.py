"""Where each node's agent is, and a call to it over gRPC (mTLS with the controller's certificate)."""
import asyncio
import functools
import os
import threading
from concurrent import futures

import grpc

from kfault_api.rpc import agent_pb2_grpc as pb_grpc

AGENT_NAMESPACE = os.environ.get("KFAULT_NAMESPACE", "kfault-system")
AGENT_LABEL = "app.kubernetes.io/name=kfault-agent"
AGENT_TLS_NAME = "kfault-agent"     # agents are dialled by pod IP; their certificate names this
LEASE_S = float(os.environ.get("KFAULT_LEASE_S", "15"))
RENEW_S = float(os.environ.get("KFAULT_RENEW_S", "5"))    # a third of the lease: two renewals may fail
RPC_TIMEOUT_S = 30.0
# Blocking gRPC calls wait here, not in asyncio's default pool (min(32, cores + 4) threads): a
# placement on 50 nodes is not queued behind the renewals of every other experiment.
CALLS = futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="kfault-agent-call")


class NoAgent(LookupError):
    """No ready agent on a node: its pods get that as their error."""


def agent_address(pod):
    """host:port of an agent pod: its IP and its container port named grpc; None until it has both."""
    ip = (pod.get("status") or {}).get("podIP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "grpc" and ip:
                return f"{ip}:{port['containerPort']}"
    return None


class AgentDirectory:
    def __init__(self, credentials=None):
        """credentials: grpc.ssl_channel_credentials(ca, controller key, controller cert), or
        None for plaintext (tests on one machine only)."""
        self.credentials = credentials
        self._channels = {}         # address -> (channel, stub)
        self._lock = threading.Lock()

    @classmethod
    def from_tls_dir(cls, directory):
        def read(name):
            with open(os.path.join(directory, name), "rb") as handle:
                return handle.read()
        return cls(grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt")))

    def stub(self, address):
        """The agent's stub, made once per address: making one builds a callable per method,
        which cost the event loop a fifth of its busy time when made per call (profiled at 5,000 pods)."""
        with self._lock:
            if address not in self._channels:
                if self.credentials:
                    channel = grpc.secure_channel(address, self.credentials,
                                                  options=[("grpc.ssl_target_name_override", AGENT_TLS_NAME)])
                else:
                    channel = grpc.insecure_channel(address)
                self._channels[address] = (channel, pb_grpc.AgentStub(channel))
            return self._channels[address][1]

    def close(self):
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()


class Config:
    """How the controller reaches agents: __main__ (or a test) sets the directory once."""
    agents = AgentDirectory()
    lease_s = LEASE_S


async def call(node, address, method, request, timeout_s=RPC_TIMEOUT_S):
    """One RPC to a node's agent, off the event loop; NoAgent when the node has none ready."""
    if address is None:
        raise NoAgent(f"no ready kfault agent on node {node}")
    stub = Config.agents.stub(address)
    return await asyncio.get_running_loop().run_in_executor(
        CALLS, functools.partial(getattr(stub, method), request, timeout=timeout_s))
