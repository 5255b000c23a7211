"""The tests that need a kernel: real BPF, namespaces, cgroups (tests/kernel/run)."""
