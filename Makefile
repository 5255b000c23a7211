# kfault: run as root on Debian 12.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit-test bench clean

setup:
	scripts/setup-host

demo: setup
	$(PY) -m kfault_agent.demo

test: setup
	$(PY) -m pytest -v -p no:cacheprovider tests

bench: setup
	$(PY) bench/net_overhead.py

clean:
	rm -rf $(VENV) *.egg-info
