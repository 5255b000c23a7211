"""The engines: each places one kind of experiment on this node and takes it back, behind the
one Engine protocol (base.py); leases.py holds the lease bookkeeping they share."""
