"""What the administrator chose at start: one Settings, built by __main__ from its flags and the
Deployment's environment (or by a test), registered with the handlers (the timers' intervals) and
passed to every handler in kopf's memo (memo.settings). Nothing else sets it."""
import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    credentials: object = None          # grpc channel credentials to dial agents (mTLS); None: plaintext, local tests
    lease_s: float = 15.0               # how long an agent holds a placement that nobody renews
    renew_s: float = 5.0                # a third of the lease: two renewals may fail
    schedule_tick_s: float = 1.0        # how often each Schedule looks at the clock (Chaos Mesh examples: @every 5s)
    workflow_tick_s: float = 1.0        # how often each Workflow and StatusCheck steps (deadlines, checks due)
    allow_metadata_status_checks: bool = False  # StatusChecks may request link-local and cloud metadata addresses
    agent_namespace: str = "kfault-system"      # where the agents' pods are
    allow_cross_namespace: bool = False         # --allow-cross-namespace: any namespace's pods, without its consent

    def with_environment(self, environ=os.environ):
        """These settings as the environment overrides them: KFAULT_LEASE_S, KFAULT_RENEW_S,
        KFAULT_SCHEDULE_TICK_S, KFAULT_WORKFLOW_TICK_S, KFAULT_NAMESPACE."""
        chosen = {field: kind(environ[name]) for name, field, kind in (
            ("KFAULT_LEASE_S", "lease_s", float), ("KFAULT_RENEW_S", "renew_s", float),
            ("KFAULT_SCHEDULE_TICK_S", "schedule_tick_s", float),
            ("KFAULT_WORKFLOW_TICK_S", "workflow_tick_s", float), ("KFAULT_NAMESPACE", "agent_namespace", str))
            if name in environ}
        return replace(self, **chosen)
