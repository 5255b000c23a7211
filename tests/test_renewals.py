"""The controller renews leases one call per node for all its experiments (renewals.py)."""
from kfault_controller.renewals import Renewals


def test_each_node_is_renewed_once_for_every_experiment_on_it():
    renewals = Renewals(stale_s=15)
    renewals.want("default/a", ["node-1", "node-2"], now=0)
    renewals.want("default/b", ["node-2"], now=0)
    assert renewals.by_node(now=1) == {"node-1": ["default/a"], "node-2": ["default/a", "default/b"]}


def test_a_want_replaces_the_last_one_and_none_drops_it():
    renewals = Renewals(stale_s=15)
    renewals.want("default/a", ["node-1", "node-2"], now=0)
    renewals.want("default/a", ["node-2"], now=1)
    assert renewals.by_node(now=2) == {"node-2": ["default/a"]}
    renewals.want("default/a", [], now=3)
    assert renewals.by_node(now=4) == {}


def test_a_dropped_experiment_is_renewed_nowhere():
    renewals = Renewals(stale_s=15)
    renewals.want("default/a", ["node-1"], now=0)
    renewals.drop("default/a")
    assert renewals.by_node(now=1) == {}


def test_a_want_not_repeated_within_stale_s_lapses_so_its_leases_end():
    renewals = Renewals(stale_s=15)
    renewals.want("default/a", ["node-1"], now=0)
    renewals.want("default/b", ["node-1"], now=10)
    assert renewals.by_node(now=15) == {"node-1": ["default/a", "default/b"]}
    assert renewals.by_node(now=16) == {"node-1": ["default/b"]}
    assert renewals.by_node(now=15) == {"node-1": ["default/b"]}     # forgotten, not only hidden
