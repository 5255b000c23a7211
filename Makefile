# kfault: run as root on Debian 12.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo lint test kernel-test bench bench-io bench-dns bench-http bench-syscall bench-agent bench-controller kernel-bench bench-stress proto crds images clean

setup:
	scripts/setup-host

demo: setup
	$(PY) -m kfault_lab.demo

# Every test on this machine's kernel; a test needing a feature it lacks skips, naming it.
test:
	scripts/setup-host test
	$(PY) -m pytest -v -p no:cacheprovider -rs --durations=25 tests

# The stock-kernel tier: Debian's stock kernel in a VM (virtme-ng; KVM or TCG), the tests only
# such a kernel can show (tests/tiers.py), nothing skipped.
kernel-test: setup
	scripts/vm-run env KFAULT_TIER=stock-kernel tests/kernel/run

# Python by ruff (pyproject.toml), BPF C by clang-format (bpf/.clang-format).
lint:
	scripts/setup-host test
	$(VENV)/bin/ruff check .
	scripts/check-bpf-format

bench: setup
	$(PY) bench/net_overhead.py

bench-io: setup
	$(PY) bench/io_overhead.py

bench-dns: setup
	$(PY) bench/dns_overhead.py

# HTTPChaos: per-packet cost here; the latency beside NetworkChaos's delay needs sch_fq (the VM:
# scripts/vm-run make bench-http).
bench-http: setup
	$(PY) bench/http_overhead.py

# SyscallChaos's faults: needs BPF LSM (kernel-bench runs it on the stock kernel).
bench-syscall: setup
	$(PY) bench/syscall_overhead.py

# The agent's time to ready and memory (PSS over its processes), first start and restart.
bench-agent: setup
	$(PY) bench/agent_footprint.py

# The controller against kmock, 100 to 5,000 pods, 1 to 100 experiments (ARGS="--grid": every size).
bench-controller:
	scripts/setup-host test
	$(PY) bench/controller.py $(ARGS)

# Benchmarks on the stock kernel, in the VM: kfault beside netem (sch_fq, sch_netem), and the
# file I/O loop with the file hooks beside a FUSE passthrough (bindfs), and SyscallChaos's hooks.
kernel-bench: setup
	dpkg -s bindfs >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null
	scripts/vm-run sh -c '$(PY) bench/edt_vs_netem.py && $(PY) bench/io_overhead.py && $(PY) bench/syscall_overhead.py'

# StressChaos's accuracy (CPU held against cpu.max, memory held), in the VM: this host has cgroup
# v2's cpu and memory controllers on cgroup v1.
bench-stress: setup
	scripts/vm-run $(PY) bench/stress_accuracy.py

# Regenerate what is rendered from one source (tests fail while these are stale).
proto: setup
	$(PY) -m kfault_api.rpc.generate proto api

crds: setup
	$(PY) -m kfault_api.crds manifests/crds

# The agent and controller images, built here with podman FROM a base made from Debian packages
# (no registry): localhost/kfault-agent:VERSION, localhost/kfault-controller:VERSION.
images:
	scripts/setup-host images
	scripts/build-images

clean:
	rm -rf $(VENV) */*.egg-info
