"""Chaos Mesh 2.x's `kind: Schedule`, a kind of its own: runs.py decides when a run is due and
what its history keeps (pure), handlers.py creates and deletes the experiments it runs and
writes its status. The cron times it reads are ../cron.py's."""
