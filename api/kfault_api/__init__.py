"""kfault's shared model: what the controller and the agent both speak."""
