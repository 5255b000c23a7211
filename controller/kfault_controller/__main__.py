"""python -m kfault_controller [--tls-dir DIR | --insecure] [--metrics-port N] [--health-port N]
                               [--allow-cross-namespace] [--allow-metadata-status-checks]

The one place the controller's settings are decided: its flags, then the Deployment's
environment (settings.Settings.with_environment)."""
import argparse
import asyncio
import sys

from prometheus_client import start_http_server

from kfault_controller import operator
from kfault_controller.agents import credentials_from_tls_dir
from kfault_controller.settings import Settings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kfault-controller")
    parser.add_argument("--tls-dir", help="tls.crt, tls.key, ca.crt: the controller's identity for agents")
    parser.add_argument("--insecure", action="store_true", help="plaintext to agents: local tests only")
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("--allow-cross-namespace", action="store_true",
                        help="experiments may select pods of any namespace without its consent "
                             "(kube-system and kfault-system still need theirs)")
    parser.add_argument("--allow-metadata-status-checks", action="store_true",
                        help="StatusChecks may request link-local and cloud metadata addresses "
                             "(169.254.0.0/16, fe80::/10, fd00:ec2::254): refused by default")
    parser.add_argument("--health-port", type=int, default=0,
                        help="kopf's liveness endpoint, GET /healthz, for kubelet's probes")
    args = parser.parse_args(argv)
    if not args.tls_dir and not args.insecure:
        parser.error("--tls-dir DIR, or --insecure for a local test")
    settings = Settings(credentials=credentials_from_tls_dir(args.tls_dir) if args.tls_dir else None,
                        allow_cross_namespace=args.allow_cross_namespace,
                        allow_metadata_status_checks=args.allow_metadata_status_checks).with_environment()
    if args.metrics_port:
        start_http_server(args.metrics_port)
    # kopf answers /healthz once its startup handlers ran, for as long as its event loop turns.
    liveness = f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
    asyncio.run(operator.run(settings, liveness_endpoint=liveness))
    return 0


if __name__ == "__main__":
    sys.exit(main())
