"""Prometheus surface: each engine's metric families, read from the kernel at scrape time, no
polling thread."""


class EngineCollector:
    """What the engines count, at every scrape."""

    def __init__(self, engines):
        self.engines = list(engines)

    def collect(self):
        for engine in self.engines:
            yield from engine.metric_families()


def serve(engines, port, registry=None):
    """One /metrics on `port` for every engine."""
    from prometheus_client import REGISTRY, start_http_server
    registry = registry or REGISTRY
    registry.register(EngineCollector(engines))
    return start_http_server(port, registry=registry)
