"""Chaos Mesh 2.x's `kind: StatusCheck`: checks.py says when a request is due and what the
status becomes after it (pure), probe.py makes one HTTP request (bounded, never to metadata
addresses unless allowed), handlers.py runs them and writes the status."""
