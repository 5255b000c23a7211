"""kfault's tests, a package: helper modules are imported by name (`from tests.kube import
controller`), never from a conftest.py, which holds only fixtures and hooks."""
