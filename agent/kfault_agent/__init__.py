"""kfault's node agent."""
import os

# The agent forks (pyroute2 enters network namespaces in forked children, the holder and the
# thaw guard are forked) while gRPC threads run. gRPC's fork handlers abort such children:
# switch them off before grpc is first imported. Nothing a child does touches gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
