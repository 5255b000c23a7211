"""What this tier requires of the kernel. A test that can't run here skips on the host tier
(saying where it runs) and fails where the tier requires every feature: tests/kernel/run sets
KFAULT_REQUIRE_FEATURES on a stock kernel (the VM tier, the Vagrant boxes), where nothing may
skip."""
import os

import pytest

REQUIRED_FEATURES = {f for f in os.environ.get("KFAULT_REQUIRE_FEATURES", "").split(",") if f}


def skip_for_lack_of(feature, reason):
    reason = f"kernel lacks {feature}: {reason}"
    if feature in REQUIRED_FEATURES:
        pytest.fail(f"{reason} (this tier requires {feature})")
    pytest.skip(f"{reason} (runs in the VM tier: make kernel-test)")


def skip_unless_required(reason):
    """Skip for `reason` on the host tier; fail in a tier that requires features, where a
    skipped test would be a behaviour left untested without anyone being told."""
    if REQUIRED_FEATURES:
        pytest.fail(f"{reason} (KFAULT_REQUIRE_FEATURES is set: nothing may skip in this tier)")
    pytest.skip(reason)
