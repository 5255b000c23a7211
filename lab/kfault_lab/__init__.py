"""kfault's lab: test hosts in network namespaces, victim probes, and the demo. Not in any image."""
