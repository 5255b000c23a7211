"""Where each node's agent is, and a call to it over gRPC (mTLS with the controller's certificate)."""
import asyncio
import os
import threading

import grpc

from kfault_api.rpc import agent_pb2_grpc as pb_grpc

AGENT_LABEL = "app.kubernetes.io/name=kfault-agent"
AGENT_TLS_NAME = "kfault-agent"     # agents are dialled by pod IP; their certificate names this
RPC_TIMEOUT_S = 30.0


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
    """How the controller reaches agents, one per operator run: a channel per address, and the
    lease every placement and renewal asks for. The handlers' calls go through asyncio channels
    (grpc.aio) on the event loop: a blocking call waiting in a thread cost the loop twice as
    much per call (the hand-off to the thread and back), and an experiment on 200 nodes makes
    200 calls. stub() is a blocking stub, for a caller outside the event loop."""

    def __init__(self, credentials, lease_s):
        """credentials: grpc.ssl_channel_credentials(ca, controller key, controller cert), or
        None for plaintext (tests on one machine only)."""
        self.credentials = credentials
        self.lease_s = lease_s
        self._channels = {}         # address -> (channel, stub): blocking
        self._aio = {}              # (event loop, address) -> (channel, stub): an aio channel serves one loop
        self._lock = threading.Lock()

    @classmethod
    def from_tls_dir(cls, directory, lease_s):
        return cls(credentials_from_tls_dir(directory), lease_s)

    def _channel(self, module, address):
        """A channel to `address` (module: grpc, or grpc.aio), with the controller's identity."""
        if self.credentials:
            return module.secure_channel(address, self.credentials,
                                         options=[("grpc.ssl_target_name_override", AGENT_TLS_NAME)])
        return module.insecure_channel(address)

    def stub(self, address):
        """The agent's blocking stub, made once per address: making one builds a callable per
        method, which cost the event loop a fifth of its busy time when made per call
        (profiled at 5,000 pods)."""
        with self._lock:
            if address not in self._channels:
                channel = self._channel(grpc, address)
                self._channels[address] = (channel, pb_grpc.AgentStub(channel))
            return self._channels[address][1]

    def _aio_stub(self, address):
        """The agent's asyncio stub for the running loop, made once per loop and address."""
        key = (asyncio.get_running_loop(), address)
        if key not in self._aio:
            channel = self._channel(grpc.aio, address)
            self._aio[key] = (channel, pb_grpc.AgentStub(channel))
        return self._aio[key][1]

    async def call(self, node, address, method, request, timeout_s=RPC_TIMEOUT_S):
        """One RPC to a node's agent; NoAgent when the node has none ready."""
        if address is None:
            raise NoAgent(f"no ready kfault agent on node {node}")
        return await getattr(self._aio_stub(address), method)(request, timeout=timeout_s)

    async def aclose(self):
        """close(), closing first the asyncio channels of the running loop."""
        loop = asyncio.get_running_loop()
        for key in [key for key in self._aio if key[0] is loop]:
            channel, _ = self._aio.pop(key)
            await channel.close()
        self.close()

    def close(self):
        """Close the blocking channels; asyncio channels of other loops are let go (a closed
        loop can't close them)."""
        self._aio.clear()
        with self._lock:
            for channel, _ in self._channels.values():
                channel.close()
            self._channels.clear()
