"""Experiment -> rules: pure logic, no kernel."""
import ipaddress
import os

import pytest

from kfault_agent import errors, policy
from kfault_api import layout, spec


def chaos(action, **fields):
    return spec.parse_experiment({"apiVersion": spec.API_VERSION, "kind": "NetworkChaos",
                                  "metadata": {"name": "exp"}, "spec": {"action": action, **fields}})

def test_uncorrelated_thresholds_are_the_rate():
    miss, hit = policy.chance_thresholds(spec.Chance(30, 0))
    assert miss == hit == round(0.3 * 2**32)


def test_correlated_chain_keeps_the_rate_and_makes_runs():
    miss, hit = policy.chance_thresholds(spec.Chance(30, 90))
    p_miss, p_hit = miss / 2**32, hit / 2**32
    stationary = p_miss / (1 - p_hit + p_miss)
    assert stationary == pytest.approx(0.30, abs=1e-6)
    assert 1 / (1 - p_hit) > 10     # mean run of losses


def test_hundred_percent_is_certain():
    assert policy.chance_thresholds(spec.Chance(100, 0)) == (layout.ALWAYS, layout.ALWAYS)


def test_ipv4_is_mapped_into_the_ipv6_key():
    assert str(policy.as_ipv6_network("10.0.0.0/8")) == "::ffff:a00:0/104"


def keys(direction, local, *peers):
    return policy.peer_keys(direction, [ipaddress.ip_address(local)], [ipaddress.ip_network(p) for p in peers])


def test_longest_prefix_carries_every_containing_rule():
    table = policy.PeerTable()
    table.add(3, keys("to", "10.0.0.1", "10.1.2.3/32"))
    table.add(2, keys("to", "10.0.0.1", "10.1.0.0/16"))
    table.add(4, keys("from", "10.0.0.1", "10.1.2.3/32"))   # other direction: separate
    affected = table.add(1, keys("to", "10.0.0.1"))          # every peer: touches all "to" entries
    by_net = {str(net): slots for (_, _, net), slots in table.entries(affected).items()}
    assert by_net == {"::/0": (1,), "::ffff:a01:0/112": (1, 2), "::ffff:a01:203/128": (1, 2, 3)}
    affected = table.remove(2)
    by_net = {str(net): slots for (_, _, net), slots in table.entries(affected).items()}
    assert by_net == {"::ffff:a01:0/112": (), "::ffff:a01:203/128": (1, 3)}


def test_too_many_overlapping_rules_is_a_clear_conflict():
    table = policy.PeerTable()
    for slot in range(layout.MAX_RULES_PER_PEER + 1):
        affected = table.add(slot, keys("to", "10.0.0.1"))
    with pytest.raises(errors.RuleConflict, match="at most"):
        table.entries(affected)


def test_rule_fields_carry_actions_and_scope():
    experiment = spec.parse_experiment({
        "apiVersion": spec.API_VERSION, "kind": "NetworkChaos", "metadata": {"name": "x"},
        "spec": {"action": "netem", "loss": {"loss": "10"}, "corrupt": {"corrupt": "5"},
                 "protocol": "tcp", "peerPorts": "8000-8080"}})
    (group,) = policy.peer_groups(experiment, lambda peer: (peer.network,))
    fields = policy.rule_fields(experiment, group.peer_ports)
    assert fields["actions"] == layout.ACT_LOSS | layout.ACT_CORRUPT
    assert (fields["protocol"], fields["peer_port_min"], fields["peer_port_max"]) == (6, 8000, 8080)


def test_reject_adds_its_bit_to_the_partition_and_drop_does_not():
    assert policy.rule_fields(chaos("partition"))["actions"] == layout.ACT_PARTITION
    assert policy.rule_fields(chaos("partition", partitionBehavior="drop"))["actions"] == layout.ACT_PARTITION
    assert policy.rule_fields(chaos("partition", partitionBehavior="reject"))["actions"] == \
        layout.ACT_PARTITION | layout.ACT_REJECT


def test_correlated_jitter_keeps_the_spread_of_one_sample():
    for percent in (0, 25, 75, 100):
        last, fresh = policy.jitter_weights(percent)
        # An AR(1) chain x' = c x + sqrt(1 - c^2) e keeps var(x) = var(e).
        assert abs((last / layout.WEIGHT_ONE) ** 2 + (fresh / layout.WEIGHT_ONE) ** 2 - 1) < 1e-4
        assert abs(last / layout.WEIGHT_ONE - percent / 100) < 1e-4


def test_reorder_sets_its_bit_chance_and_gap():
    experiment = chaos("delay", delay={"latency": "10ms", "reorder": {"reorder": "25", "correlation": "50",
                                                                       "gap": 5}})
    fields = policy.rule_fields(experiment)
    assert fields["actions"] & layout.ACT_REORDER and fields["actions"] & layout.ACT_DELAY
    assert fields["reorder_gap"] == 5
    assert (fields["reorder_after_miss"], fields["reorder_after_hit"]) == policy.chance_thresholds(
        experiment.delay.reorder.chance)
    plain = policy.rule_fields(chaos("delay", delay={"latency": "10ms"}))
    assert not plain["actions"] & layout.ACT_REORDER


def test_a_delay_per_connection_sets_its_bit_beside_the_delay():
    fields = policy.rule_fields(chaos("delay", delay={"latency": "200ms", "per": "connection"}))
    assert fields["actions"] & layout.ACT_DELAY and fields["actions"] & layout.ACT_PER_CONNECTION
    assert fields["delay_ns"] == 200_000_000
    assert not policy.rule_fields(chaos("delay", delay={"latency": "1ms"}))["actions"] & layout.ACT_PER_CONNECTION


def test_a_target_with_a_port_gets_its_own_rule_and_peer_ports_stay_for_the_rest():
    experiment = chaos("partition", protocol="tcp", peerPorts="8000-8080",
                       externalTargets=["10.0.0.0/24", "db.example:8080", "10.0.1.7:8080", "[2001:db8::5]:8000",
                                        "10.0.2.0/24:8000"])
    resolved = {"db.example": (ipaddress.ip_network("10.0.3.3/32"), ipaddress.ip_network("2001:db8::3/128"))}
    groups = policy.peer_groups(experiment, lambda p: resolved[p.host] if p.host else (p.network,))
    assert [(g.peer_ports, [str(n) for n in g.networks]) for g in groups] == [
        ((8000, 8080), ["10.0.0.0/24"]),
        ((8080, 8080), ["10.0.3.3/32", "2001:db8::3/128", "10.0.1.7/32"]),
        ((8000, 8000), ["2001:db8::5/128", "10.0.2.0/24"])]
    assert policy.rule_fields(experiment, groups[1].peer_ports)["peer_port_min"] == 8080


def test_no_targets_is_every_peer_on_spec_peer_ports():
    (group,) = policy.peer_groups(chaos("partition", protocol="udp", peerPorts="53"), None)
    assert group == policy.PeerGroup((53, 53), (policy.ALL_PEERS,))


def test_peakrate_with_minburst_cuts_the_burst_to_minburst():
    shaped = chaos("bandwidth", bandwidth={"rate": "1mbps", "buffer": 100000, "limit": 20000,
                                           "peakrate": 2000000, "minburst": 3000})
    assert policy.rule_fields(shaped)["burst_bytes"] == 3000
    alone = chaos("bandwidth", bandwidth={"rate": "1mbps", "buffer": 100000, "limit": 20000, "peakrate": 2000000})
    assert policy.rule_fields(alone)["burst_bytes"] == 100000 and alone.notes


def test_attr_fields_write_only_what_the_override_names():
    fields = policy.attr_fields(spec.AttrOverride(size=0, perm=0o640, mtime=(5, 6), rdev=os.makedev(8, 1)))
    assert fields["attrs"] == layout.IO_ATTR_SIZE | layout.IO_ATTR_MODE | layout.IO_ATTR_MTIME | layout.IO_ATTR_RDEV
    assert (fields["size"], fields["mtime_sec"], fields["mtime_nsec"]) == (0, 5, 6)
    assert (fields["mode_mask"], fields["mode"]) == (0o7777, 0o640), "perm alone keeps the file type"
    assert (fields["rdev_major"], fields["rdev_minor"]) == (8, 1)
    big = os.makedev(300, 70000)
    assert (policy.dev_major(big), policy.dev_minor(big)) == (os.major(big), os.minor(big))


def test_attr_kind_replaces_the_type_bits_only():
    fields = policy.attr_fields(spec.AttrOverride(kind="directory"))
    assert (fields["mode_mask"], fields["mode"], fields["attrs"]) == (0o170000, 0o040000, layout.IO_ATTR_MODE)


def test_mistake_fields():
    assert policy.mistake_fields(spec.Mistake("random", 3, 9)) == \
        {"filling": layout.IO_FILL_RANDOM, "max_occurrences": 3, "max_length": 9}
