"""`kfault`: validate, run and inspect experiments on this node. A thin surface over the core."""
import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time

from kfault_api import schema, spec, units

EXIT_INVALID = 1
EXIT_CANNOT = 2


def _load_experiments(path, for_node=True):
    return [spec.parse_experiment(doc, for_node) for doc in spec.load_documents(path)]


def cmd_validate(args):
    try:
        experiments = _load_experiments(args.file, for_node=False)
    except spec.InvalidSpec as err:
        for error in err.errors:
            print(f"{args.file}: {error}", file=sys.stderr)
        return EXIT_INVALID
    for experiment in experiments:
        print(f"{args.file}: {experiment.key} ({experiment.action}) is valid")
    return 0


def cmd_capabilities(args):
    from kfault_agent.kernel import loader
    caps = loader.node_capabilities()
    print("kernel features:")
    for cap in caps.values():
        print(f"  {cap.name:<15} {'yes' if cap.available else 'no ':<4} {cap.reason}")
    print("network actions:")
    for action in loader.ACTION_NEEDS:
        ok, reason = loader.action_support(caps, action)
        print(f"  {action:<10} {'yes' if ok else 'no ':<4} {reason}")
    print("file I/O actions, by method:")
    for action in loader.IO_NEEDS:
        for method in schema.IO_METHODS:
            ok, reason = loader.io_support(caps, action, method)
            print(f"  {action:<8} {method:<6} {'yes' if ok else 'no ':<4} {reason}")
    return 0


def _format_counters(engine, active, elapsed):
    lines = []
    for direction, outcomes in engine.counters(active).items():
        matched = outcomes["matched"][0]
        parts = [f"matched {matched}"]
        for outcome in ("dropped", "duplicated", "corrupted", "delayed"):
            count = outcomes[outcome][0]
            if count:
                share = f" ({100 * count / matched:.1f}%)" if matched else ""
                parts.append(f"{outcome} {count}{share}")
        lines.append(f"{elapsed:6.1f}s  {active.experiment.key} {active.experiment.action} "
                     f"{direction:<4} " + "  ".join(parts))
    return lines


def _format_io_counters(engine, active, elapsed):
    calls, delay_ns = engine.counters(active)
    parts = [f"{method} {c['passed'] + c['failed'] + c['delayed']} (failed {c['failed']}, delayed {c['delayed']})"
             for method, c in calls.items()]
    return [f"{elapsed:6.1f}s  {active.experiment.key} {active.experiment.action} " + "  ".join(parts) +
            (f"  injected delay {delay_ns / 1e9:.1f}s" if delay_ns else "")]


def _format_pod_state(engine, active, elapsed):
    from kfault_agent.engines import podfault
    state = "frozen" if podfault.is_frozen(active.target.path) else "freezing"
    return [f"{elapsed:6.1f}s  {active.experiment.key} {active.experiment.action} {active.target.path} {state}"]


def _open_engine(kind, target_text, experiments, lease):
    """(engine, target, what closes it, counter formatter, what the target is) for one kind."""
    from kfault_agent.engines import iofault
    from kfault_agent.kernel import loader
    from kfault_agent.engines import netfault, podfault
    from kfault_agent.kernel import topology
    if kind == "PodChaos":
        target = topology.resolve_cgroup_target(target_text)
        engine = podfault.PodFaultEngine(lease_s=lease)
        return engine, target, engine.close, _format_pod_state, f"cgroup {target.path}"
    if kind == "IOChaos":
        target = topology.resolve_cgroup_target(target_text)
        datapath, caps = loader.probe_io()
        if datapath is None:
            raise loader.KernelUnsupported(caps["io-tracepoints"].reason)
        return (iofault.IOFaultEngine(datapath, caps, lease_s=lease), target, datapath.close, _format_io_counters,
                f"cgroup {target.path}")
    target = topology.resolve_net_target(target_text, experiments[0].device)
    datapath = loader.NetDatapath()
    engine = netfault.NetFaultEngine(datapath, loader.probe_capabilities(), lease_s=lease)
    return (engine, target, datapath.close, _format_counters,
            ", ".join(i.inside.ifname for i in target.interfaces))


def cmd_run(args):
    from kfault_agent import metrics
    from kfault_agent.errors import Refusal
    try:
        experiments = _load_experiments(args.file)
        duration_ns = units.parse_duration_ns(args.duration) if args.duration else None
    except spec.InvalidSpec as err:
        for error in err.errors:
            print(f"{args.file}: {error}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as err:
        print(f"--duration {args.duration!r}: use {err}", file=sys.stderr)
        return EXIT_INVALID
    kinds = {type(e).__name__ for e in experiments}
    if len(kinds) > 1:
        print(f"{args.file}: one kind of experiment per run (found {', '.join(sorted(kinds))}): "
              "split the file", file=sys.stderr)
        return EXIT_INVALID

    try:
        engine, target, close, format_counters, where = _open_engine(kinds.pop(), args.target, experiments,
                                                                        args.lease)
    except Refusal as err:
        print(f"kfault: {err}", file=sys.stderr)
        return EXIT_CANNOT
    try:
        for experiment in experiments:
            try:
                engine.check_supported(experiment)
            except Refusal as err:
                print(f"kfault: {experiment.key}: {err}", file=sys.stderr)
                return EXIT_CANNOT

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        if args.metrics_port:
            metrics.serve([engine], args.metrics_port)
        started = time.monotonic()
        for experiment in experiments:
            if duration_ns:
                experiment = dataclasses.replace(experiment, duration_ns=duration_ns)
            engine.apply(experiment, target)
        print(f"kfault: injecting on {target.name} ({where}); lease {args.lease:g}s; Ctrl-C to stop", flush=True)
        while not stop.wait(args.interval):
            for key in engine.renew():
                engine.revoke(*key)
            elapsed = time.monotonic() - started
            for active in engine.active():
                for line in format_counters(engine, active, elapsed):
                    print(line, flush=True)
            if not engine.active():
                break
    except Exception as err:  # noqa: BLE001 - report, then always clean up
        print(f"kfault: {err}", file=sys.stderr)
        return EXIT_CANNOT
    finally:
        engine.revoke_all()
        close()
    print("kfault: all faults removed; targets restored", flush=True)
    return 0


def cmd_cleanup(args):
    from kfault_agent.kernel import tc
    print(f"kfault: removed {tc.remove_stale_filters()} stale kfault filter(s)")
    return 0


def cmd_agent(args):
    """The node agent: both datapaths loaded once, the gRPC API for the controller, metrics."""
    import os
    from kfault_agent.engines import iofault
    from kfault_agent.kernel import loader
    from kfault_agent import metrics
    from kfault_agent.engines import netfault, podfault
    from kfault_agent import server
    from kfault_agent.kernel import tc
    engines, caps = {}, {}
    stale = tc.remove_stale_filters()
    if stale:
        print(f"kfault agent: removed {stale} filter(s) an agent that died had left", file=sys.stderr)
    try:
        net = loader.NetDatapath()
        caps.update(loader.probe_capabilities())
        engines["NetworkChaos"] = netfault.NetFaultEngine(net, caps, lease_s=args.lease)
    except loader.KernelUnsupported as err:
        caps.update(loader.probe_capabilities(err))
        print(f"kfault agent: no network faults on this node: {err}", file=sys.stderr)
    io_datapath, io_caps = loader.probe_io()
    caps.update(io_caps)
    if io_datapath:
        engines["IOChaos"] = iofault.IOFaultEngine(io_datapath, caps, lease_s=args.lease)
    engines["PodChaos"] = podfault.PodFaultEngine(lease_s=args.lease)
    credentials, common_name = None, None
    if args.tls_dir:
        def read(name):
            with open(os.path.join(args.tls_dir, name), "rb") as handle:
                return handle.read()
        credentials = server.server_credentials(read("tls.crt"), read("tls.key"), read("ca.crt"))
        common_name = server.CONTROLLER_COMMON_NAME
    elif not args.insecure:
        print("kfault agent: --tls-dir DIR (tls.crt, tls.key, ca.crt), or --insecure for a local test",
              file=sys.stderr)
        return EXIT_INVALID
    service = server.AgentService(engines, caps, node_name=args.node, require_common_name=common_name)
    grpc_server, port = server.serve(service, args.listen, credentials)
    if args.metrics_port:
        metrics.serve(engines.values(), args.metrics_port)
    print(f"kfault agent: serving {server.VERSION} on {args.listen.rsplit(':', 1)[0]}:{port} "
          f"({'mTLS' if credentials else 'insecure'}); {', '.join(engines) or 'nothing'} available", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    grpc_server.stop(5).wait()
    service.close()
    engines["PodChaos"].close()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="kfault", description="kernel-level chaos: network faults with eBPF")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check experiment documents; inject nothing")
    p.add_argument("-f", "--file", required=True)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("run", help="inject an experiment on a local target until it ends")
    p.add_argument("-f", "--file", required=True)
    p.add_argument("--target", required=True,
                   help="NetworkChaos: netns:NAME, netns:/path or pid:PID; IOChaos, PodChaos: cgroup:/dir or pid:PID")
    p.add_argument("--duration", help="overrides spec.duration, e.g. 30s")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
    p.add_argument("--lease", type=float, default=10.0,
                   help="seconds a fault outlives this process if it is killed (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between counter lines")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("capabilities", help="what this node's kernel supports, and why not")
    p.set_defaults(func=cmd_capabilities)

    p = sub.add_parser("agent", help="serve the node agent's gRPC API to the controller")
    p.add_argument("--listen", default="0.0.0.0:9440")
    p.add_argument("--tls-dir", help="tls.crt, tls.key and ca.crt (the Secret kfault-agent-tls)")
    p.add_argument("--insecure", action="store_true", help="no TLS: for a local test only")
    p.add_argument("--node", help="this node's name (default: the hostname)")
    p.add_argument("--lease", type=float, default=10.0, help="default lease of a placement, in seconds")
    p.add_argument("--metrics-port", type=int, default=0)
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("cleanup", help="remove kfault filters left by a killed agent")
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "lease", 1) <= 0:
        print("--lease: use a number of seconds above 0", file=sys.stderr)
        return EXIT_INVALID
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
