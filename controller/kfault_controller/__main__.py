"""python -m kfault_controller [--tls-dir DIR | --insecure] [--metrics-port N] [--health-port N]
                               [--allow-cross-namespace]"""
import argparse
import asyncio
import sys

import kopf
from prometheus_client import start_http_server

from kfault_controller import handlers  # registers the kopf handlers
from kfault_controller.agents import AgentDirectory, Config


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kfault-controller")
    parser.add_argument("--tls-dir", help="tls.crt, tls.key, ca.crt: the controller's identity for agents")
    parser.add_argument("--insecure", action="store_true", help="plaintext to agents: local tests only")
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--allow-cross-namespace", action="store_true",
                        help="experiments may select pods of any namespace without its consent "
                             "(kube-system and kfault-system still need theirs)")
    parser.add_argument("--health-port", type=int, default=0,
                        help="kopf's liveness endpoint, GET /healthz, for kubelet's probes")
    args = parser.parse_args(argv)
    handlers.Options.allow_cross_namespace = args.allow_cross_namespace
    if args.tls_dir:
        Config.agents = AgentDirectory.from_tls_dir(args.tls_dir)
    elif not args.insecure:
        parser.error("--tls-dir DIR, or --insecure for a local test")
    if args.metrics_port:
        start_http_server(args.metrics_port)
    # kopf answers /healthz once its startup handlers ran, for as long as its event loop turns.
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(kopf.operator(clusterwide=True, liveness_endpoint=liveness))
    return 0


if __name__ == "__main__":
    sys.exit(main())
