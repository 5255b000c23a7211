"""The engines: each places one kind of experiment on this node and takes it back."""
