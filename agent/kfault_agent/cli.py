"""`kfault`: validate, run and inspect experiments on this node. A thin surface over the core."""
import argparse
import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import time

from kfault_agent.engines.counts import (UNREACHED, DnsPlacementCounts, HttpPlacementCounts, IOPlacementCounts,
                                         NetPlacementCounts, PodPlacementCounts, StressPlacementCounts,
                                         SyscallPlacementCounts)
from kfault_agent.errors import Refusal
from kfault_agent.stop import Stopped, StopSignal
from kfault_api import schema, spec, units

EXIT_INVALID = 1
EXIT_CANNOT = 2
# What `kfault run` shows of a network placement after the matched count, where it is not zero.
SHOWN_OUTCOMES = ("dropped", "reset", "duplicated", "corrupted", "delayed")


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
        for note in experiment.notes:
            print(f"{args.file}: {experiment.key}: note: {note}")
    return 0


def cmd_capabilities(args):
    from kfault_agent.kernel import capabilities
    caps = capabilities.node_capabilities()
    print("kernel features:")
    for cap in caps.values():
        print(f"  {cap.name:<15} {'yes' if cap.available else 'no ':<4} {cap.reason}")
    print("network actions:")
    for action in capabilities.ACTION_NEEDS:
        ok, reason = capabilities.action_support(caps, action)
        print(f"  {action:<10} {'yes' if ok else 'no ':<4} {reason}")
    print("file I/O actions, by method:")
    for action in capabilities.IO_NEEDS:
        for method in schema.IO_METHODS:
            ok, reason = capabilities.io_support(caps, action, method)
            print(f"  {action:<8} {method:<6} {'yes' if ok else 'no ':<4} {reason}")
    print("file I/O actions, by I/O path (read, write, fsync):")
    for action in capabilities.IO_NEEDS:
        for path, ok, reason in capabilities.io_reach(caps, action):
            print(f"  {action:<12} {path:<15} {'yes' if ok else 'no ':<4} {reason}")
    return 0


class Exit(Exception):
    """Why `kfault run` stops early, said to the user, and the exit code that goes with it."""

    def __init__(self, code, *lines):
        super().__init__(*lines)
        self.code, self.lines = code, lines

    def report(self):
        for line in self.lines:
            print(line, file=sys.stderr)
        return self.code


def _read_run_file(args):
    """The file's experiments, all of one kind, with --duration applied; and that kind."""
    from kfault_agent import node
    try:
        experiments = _load_experiments(args.file)
        duration_ns = units.parse_duration_ns(args.duration) if args.duration else None
    except spec.InvalidSpec as err:
        raise Exit(EXIT_INVALID, *(f"{args.file}: {error}" for error in err.errors)) from None
    except ValueError as err:
        raise Exit(EXIT_INVALID, f"--duration {args.duration!r}: use {err}") from None
    kinds = {kind.name: kind for kind in map(node.kind_of, experiments)}
    if len(kinds) > 1:
        raise Exit(EXIT_INVALID, f"{args.file}: one kind of experiment per run (found {', '.join(sorted(kinds))}): "
                      "split the file")
    if duration_ns:
        experiments = [dataclasses.replace(e, duration_ns=duration_ns) for e in experiments]
    return experiments, kinds.popitem()[1]


def _open_engine(args, kind, experiments, stop):
    from kfault_agent import node
    try:
        return node.open_local(kind, args.target, experiments[0], args.lease, stop)
    except Refusal as err:
        raise Exit(EXIT_CANNOT, f"kfault: {err}") from None


def _check_all(engine, experiments):
    for experiment in experiments:
        try:
            engine.check(experiment)
        except Refusal as err:
            raise Exit(EXIT_CANNOT, f"kfault: {experiment.key}: {err}") from None


def _net_lines(counted):
    """Per direction: packets matched, and what was done to them with its share."""
    lines = []
    for direction, outcomes in counted.directions.items():
        matched = outcomes["matched"].packets
        parts = [f"matched {matched}"]
        for outcome in SHOWN_OUTCOMES:
            count = outcomes[outcome].packets
            if count:
                share = f" ({100 * count / matched:.1f}%)" if matched else ""
                parts.append(f"{outcome} {count}{share}")
        lines.append(f"{direction:<4} " + "  ".join(parts))
    return lines


def _io_lines(counted):
    """Calls per method and what was done to them; the latency injected so far; and, where a
    chosen call was out of reach, how many and why."""
    parts = [f"{method} {sum(calls.values())} ("
             + ", ".join(f"{outcome} {count}" for outcome, count in calls.items()
                         if outcome != "passed" and (count or outcome not in UNREACHED)) + ")"
             for method, calls in counted.calls.items()]
    return (["  ".join(parts) + (f"  injected delay {counted.delay_ns / 1e9:.1f}s" if counted.delay_ns else "")]
            + [f"NOT REACHED: {count} calls ({outcome}): {UNREACHED[outcome][1]}"
               for outcome, count in counted.unreached().items()])


def _pod_lines(counted):
    return [f"{counted.path} {({True: 'frozen', False: 'freezing', None: 'gone'})[counted.frozen]}"]


def _syscall_lines(counted):
    """Calls per syscall and what was done to them; the latency injected so far."""
    parts = [f"{name} {sum(calls.values())} (" + ", ".join(f"{outcome} {count}" for outcome, count in calls.items()
                                                          if outcome != "passed") + ")"
             for name, calls in counted.calls.items()]
    return ["  ".join(parts) + (f"  injected delay {counted.delay_ns / 1e9:.1f}s" if counted.delay_ns else "")]


def _stress_lines(counted):
    running = ", ".join(f"{kind} {count}" for kind, count in counted.stressors.items() if count) or "none"
    return [f"stressors {running}; cpu {counted.cpu_seconds:.1f}s (holding {counted.cpus:.2f} CPUs); "
            f"memory {counted.memory_bytes} of {counted.memory_target_bytes} bytes"]


def _dns_lines(counted):
    return ["dns  " + "  ".join(f"{outcome} {count}" for outcome, count in counted.messages.items() if count)]


def _http_lines(counted):
    return ["http  " + "  ".join(f"{outcome} {count}" for outcome, count in counted.messages.items() if count)]


# A placement's counts (engines/counts.py) -> its live lines, one short line per scope.
LIVE_LINES = {NetPlacementCounts: _net_lines, IOPlacementCounts: _io_lines, PodPlacementCounts: _pod_lines,
              StressPlacementCounts: _stress_lines, SyscallPlacementCounts: _syscall_lines,
              DnsPlacementCounts: _dns_lines, HttpPlacementCounts: _http_lines}


def live_lines(counted):
    return LIVE_LINES[type(counted)](counted)


def _inject_until_done(engine, targets, experiments, args, stop):
    """Place, then print live counters every --interval until the experiments end or a signal."""
    from kfault_agent import metrics, node
    if args.metrics_port:
        metrics.serve([engine], args.metrics_port)
    started = time.monotonic()
    node.place(engine, experiments, targets, stop)
    print(f"kfault: injecting on {', '.join(t.name for t in targets)} "
          f"({'; '.join(engine.describe(t) for t in targets)}); lease {args.lease:g}s; Ctrl-C to stop", flush=True)
    for experiment in experiments:      # IOChaos: what this kernel can't reach, said before it counts it
        for path, why in getattr(engine, "unreached_paths", lambda _: [])(experiment):
            print(f"kfault: note: {experiment.key}: {experiment.action} does not reach {path} here: {why}", flush=True)
    while not stop.wait(args.interval):
        active = node.renew_local(engine)
        elapsed = time.monotonic() - started
        counted = {(c.experiment, c.target): c for c in engine.counts().placements}
        for placement in active:
            for line in live_lines(counted[placement.key]):
                print(f"{elapsed:6.1f}s  {placement.experiment.key} {placement.experiment.action} {line}", flush=True)
        if not active:
            break


def cmd_run(args):
    stop = StopSignal()     # first: from here a signal ends the run at the next step, never mid-step
    try:
        experiments, kind = _read_run_file(args)
        stop.check()
        engine, targets = _open_engine(args, kind, experiments, stop)
    except Exit as exit_:
        return exit_.report()
    except Stopped as stopped:
        return _stopped_while_starting("kfault: stopped before injecting; nothing was placed", stopped)
    try:
        _check_all(engine, experiments)
        _inject_until_done(engine, targets, experiments, args, stop)
    except Exit as exit_:
        return exit_.report()
    except Stopped:
        pass        # engine.close() below takes back what was placed
    except Exception as err:  # noqa: BLE001 - report, then always clean up
        print(f"kfault: {err}", file=sys.stderr)
        return EXIT_CANNOT
    finally:
        engine.close()
    print("kfault: all faults removed; targets restored", flush=True)
    return 0


def _stopped_while_starting(message, stopped):
    print(message, flush=True)
    if stopped.abandoned:
        # A load still compiles in its thread: leave now, not after it nor through the
        # interpreter's teardown under it; what it made so far is the process's and goes with it.
        sys.stderr.flush()
        os._exit(0)
    return 0


def cmd_cleanup(args):
    from kfault_agent.kernel import tc
    print(f"kfault: removed {tc.remove_stale_filters()} stale kfault filter(s)")
    return 0


def cmd_agent(args):
    """The node agent: every engine this kernel can run, the gRPC API for the controller, metrics."""
    stop = StopSignal()     # first: a signal while the engines load ends the start, with them unloaded
    from kfault_agent import node, server
    if not args.tls_dir and not args.insecure:
        print("kfault agent: --tls-dir DIR (tls.crt, tls.key, ca.crt), or --insecure for a local test",
              file=sys.stderr)
        return EXIT_INVALID
    try:
        agent = node.start_agent(args.listen, args.lease,
                                 lambda text: print(f"kfault agent: {text}", file=sys.stderr),
                                 node_name=args.node, tls_dir=args.tls_dir, metrics_port=args.metrics_port,
                                 health_port=args.health_port, stop=stop)
    except Stopped as stopped:
        return _stopped_while_starting("kfault agent: stopped while starting; nothing left loaded", stopped)
    kinds = ", ".join(engine.kind.name for engine in agent.engines)
    print(f"kfault agent: serving {server.VERSION} on {args.listen.rsplit(':', 1)[0]}:{agent.port} "
          f"({'mTLS' if args.tls_dir else 'insecure'}); {kinds or 'nothing'} available", flush=True)
    stop.wait()
    agent.stop()
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
                   help="NetworkChaos, DNSChaos, HTTPChaos: netns:NAME, netns:/path or pid:PID; IOChaos, PodChaos, "
                        "StressChaos, SyscallChaos: cgroup:/dir or pid:PID")
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
    p.add_argument("--health-port", type=int, default=0,
                   help="answer kubelet's gRPC probes (grpc.health.v1, plaintext) on this port")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("cleanup", help="remove kfault filters left by a killed agent")
    p.set_defaults(func=cmd_cleanup)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # kill -USR1 prints every thread's stack to stderr: a runner or agent that stops moving
    # says where it is (the kubelet's logs keep it for the DaemonSet).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "lease", 1) <= 0:
        print("--lease: use a number of seconds above 0", file=sys.stderr)
        return EXIT_INVALID
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
