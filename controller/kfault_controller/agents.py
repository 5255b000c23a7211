"""Where each node's agent is, and a call to it over gRPC (mTLS with the controller's certificate)."""
import asyncio
import functools
import os
import threading
from concurrent import futures

import grpc

from kfault_api.rpc import agent_pb2_grpc as pb_grpc

AGENT_LABEL = "app.kubernetes.io/name=kfault-agent"
AGENT_TLS_NAME = "kfault-agent"     # agents are dialled by pod IP; their certificate names this
RPC_TIMEOUT_S = 30.0
CALL_THREADS = 64


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


def agent_of(body, namespace):
    """host:port of a kfault agent pod (in the agents' `namespace`, labelled AGENT_LABEL, with an
    IP and a grpc port); None for any other pod."""
    key, value = AGENT_LABEL.split("=")
    labels = (body["metadata"].get("labels") or {})
    if body["metadata"]["namespace"] != namespace or labels.get(key) != value:
        return None
    return agent_address(body)


def credentials_from_tls_dir(directory):
    """The controller's identity for agents: tls.crt, tls.key and ca.crt of `directory`."""
    def read(name):
        with open(os.path.join(directory, name), "rb") as handle:
            return handle.read()
    return grpc.ssl_channel_credentials(read("ca.crt"), read("tls.key"), read("tls.crt"))


class AgentDirectory:
    """How the controller reaches agents, one per operator run: a channel per address, the threads
    its blocking calls wait in, and the lease every placement and renewal asks for."""

    def __init__(self, credentials, lease_s):
        """credentials: grpc.ssl_channel_credentials(ca, controller key, controller cert), or
        None for plaintext (tests on one machine only)."""
        self.credentials = credentials
        self.lease_s = lease_s
        self._channels = {}         # address -> (channel, stub)
        self._lock = threading.Lock()
        # Blocking gRPC calls wait here, not in asyncio's default pool (min(32, cores + 4) threads):
        # a placement on 50 nodes is not queued behind the renewals of every other experiment.
        self._calls = futures.ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="kfault-agent-call")

    @classmethod
    def from_tls_dir(cls, directory, lease_s):
        return cls(credentials_from_tls_dir(directory), lease_s)

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

    async def call(self, node, address, method, request, timeout_s=RPC_TIMEOUT_S):
        """One RPC to a node's agent, off the event loop; NoAgent when the node has none ready."""
        if address is None:
            raise NoAgent(f"no ready kfault agent on node {node}")
        stub = self.stub(address)
        return await asyncio.get_running_loop().run_in_executor(
            self._calls, functools.partial(getattr(stub, method), request, timeout=timeout_s))

    def close(self):
        self._calls.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()
