"""Chaos Mesh 2.x's `kind: Workflow`, a kind of its own: nodes.py steps a workflow from what the
API holds (pure), task.py makes a Task's pod (pure), handlers.py makes the calls and writes the
status."""
