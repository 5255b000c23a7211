"""Which tests each tier runs (`--tier`, or KFAULT_TIER).

The host tier (`make test`) runs every test on this machine's kernel; a test needing a feature
it lacks skips, naming it. The stock-kernel tier (`make kernel-test`: Debian's 6.1 in a VM under
TCG, where a test costs about ten times what it costs here) runs what only such a kernel can show:

- every test that needs a feature of STOCK_KERNEL_FEATURES (the development and CI host's kernel
  lacks them, so the host tier skips those tests);
- every test marked `stock_kernel("why")`: one test of each path that a stock kernel takes
  differently although the host has a way too (classic tc where the host has tcx, the file hooks
  deciding reads and writes where the host uses the syscall tracepoints, 6.1's verifier).

It leaves out a test that needs a feature the stock kernel lacks (STOCK_KERNEL_LACKS), which the
host tier runs, so that nothing skips there. CONTRIBUTING.md says what a new kind's tests cost.
"""
import os


# Features Debian's stock kernel has and the host kernel lacks (6.18 without sch_fq, netem, BPF
# LSM or trampolines, and refusing bpf_probe_write_user).
STOCK_KERNEL_FEATURES = {"sch_fq", "sch_netem", "file-hooks", "io-errno", "bpf-lsm", "fmod_ret", "io-write-user",
                         "syscall-fault"}
# Features the stock kernel (6.1) lacks: such tests run in the host tier only.
STOCK_KERNEL_LACKS = {"tcx"}
TIERS = ("host", "stock-kernel")


def pytest_addoption(parser):
    parser.addoption("--tier", choices=TIERS, default=os.environ.get("KFAULT_TIER") or None,
                     help="run only this tier's tests (tests/tiers.py); default: every test")


def needed_features(item):
    return {feature for marker in item.iter_markers("kernel") for feature in marker.args}


def in_stock_kernel_tier(item):
    needed = needed_features(item)
    if needed & STOCK_KERNEL_LACKS:
        return False
    return bool(needed & STOCK_KERNEL_FEATURES) or item.get_closest_marker("stock_kernel") is not None


def pytest_collection_modifyitems(config, items):
    if config.getoption("tier") != "stock-kernel":
        return
    kept = [item for item in items if in_stock_kernel_tier(item)]
    config.hook.pytest_deselected(items=[item for item in items if item not in kept])
    items[:] = kept
