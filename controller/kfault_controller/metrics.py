"""The controller's Prometheus metrics."""
from prometheus_client import Counter, Gauge, Histogram

EXPERIMENTS = Gauge("kfault_controller_experiments", "Chaos resources by kind and phase.", ["kind", "phase"])
RECONCILE = Histogram("kfault_controller_reconcile_seconds", "Time to select, inject and report one resource.",
                      ["kind"])
AGENT_ERRORS = Counter("kfault_controller_agent_errors_total", "Agent calls that failed, by node.", ["node"])

_PHASES = {}        # (kind, namespace/name) -> phase, for the experiments gauge


def record_phase(kind, key, phase):
    """Keep kfault_controller_experiments{kind, phase} equal to the resources' phases (None: gone)."""
    if phase is None:
        _PHASES.pop((kind, key), None)
    else:
        _PHASES[(kind, key)] = phase
    EXPERIMENTS.clear()
    for (k, _), p in _PHASES.items():
        EXPERIMENTS.labels(k, p).inc()


def forget_phases():
    """Count no experiments: where a controller starts (the tests start several in one process)."""
    _PHASES.clear()
    EXPERIMENTS.clear()
