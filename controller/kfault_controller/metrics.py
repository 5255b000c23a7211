"""The controller's Prometheus metrics."""
from prometheus_client import Counter, Gauge, Histogram

from kfault_api.spec import KINDS

EXPERIMENTS = Gauge("kfault_controller_experiments", "Chaos resources by kind and phase.", ["kind", "phase"])
EXPERIMENT_PODS = Gauge("kfault_controller_experiment_pods",
                        "Pods of a resource by state: injected (its agent holds the fault now) or failed "
                        "(its agent refused it: AllInjected is False).", ["kind", "experiment", "state"])
RECONCILE = Histogram("kfault_controller_reconcile_seconds", "Time to select, inject and report one resource.",
                      ["kind"])
for _kind in KINDS:
    RECONCILE.labels(_kind)   # at 0 from the start: rate() sees the first reconcile, not a series born at 1
AGENT_ERRORS = Counter("kfault_controller_agent_errors_total", "Agent calls that failed, by node.", ["node"])

HOLDING_PHASES = ("Running", "Failed")     # phases whose records may hold faults or refusals


def pod_states(phase, records):
    """{state: pods}: those holding the fault now, and those whose agent refused it."""
    if phase not in HOLDING_PHASES:
        return {"injected": 0, "failed": 0}
    return {"injected": sum(1 for r in records if r.get("injectedAt") and not r.get("recoveredAt")),
            "failed": sum(1 for r in records if r.get("error"))}


class Phases:
    """Each resource's phase, for the experiments gauge: one per operator run, which starts
    counting no experiments (a process's registry outlives an operator run in the tests)."""

    def __init__(self):
        self._phases = {}       # (kind, namespace/name) -> phase
        EXPERIMENTS.clear()
        EXPERIMENT_PODS.clear()

    def knows(self, kind, key, phase):
        """Whether the resource's phase is recorded as `phase` already."""
        return self._phases.get((kind, key)) == phase

    def record(self, kind, key, phase, records=()):
        """Keep kfault_controller_experiments{kind, phase} equal to the resources' phases, and
        kfault_controller_experiment_pods to their records (phase None: gone)."""
        # Only the two series that change move: every keep-alive tick records its resource's
        # phase, and recounting every resource at each (as before) cost the event loop time
        # quadratic in experiments (500 experiments: 100 ticks a second, each over all 500).
        before = self._phases.get((kind, key))
        if phase is None:
            self._phases.pop((kind, key), None)
            for state in ("injected", "failed"):
                _remove_pods(kind, key, state)
        else:
            self._phases[(kind, key)] = phase
            for state, count in pod_states(phase, records).items():
                EXPERIMENT_PODS.labels(kind, key, state).set(count)
        if before == phase:
            return
        if before is not None:
            EXPERIMENTS.labels(kind, before).dec()
        if phase is not None:
            EXPERIMENTS.labels(kind, phase).inc()


def _remove_pods(kind, key, state):
    try:
        EXPERIMENT_PODS.remove(kind, key, state)
    except KeyError:
        pass            # never recorded
