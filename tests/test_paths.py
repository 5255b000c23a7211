"""Paths as a targeted process sees them (kernel/paths.py), on real links in a temporary tree
and this process's own /proc entries."""
import os

from kfault_agent.kernel import paths
from kfault_api import glob_dfa, layout


def test_a_folder_is_resolved_through_relative_and_absolute_links(tmp_path):
    (tmp_path / "run" / "etcd").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("../run")                 # relative, as Debian's /var/run
    (tmp_path / "vol").symlink_to(tmp_path / "var" / "run")         # absolute, from the root
    me = os.getpid()
    assert paths.resolve_in_root(me, f"{tmp_path}/var/run/etcd") == f"{tmp_path}/run/etcd"
    assert paths.resolve_in_root(me, f"{tmp_path}/vol/etcd/not-yet/x") == f"{tmp_path}/run/etcd/not-yet/x"
    assert paths.resolve_in_root(me, f"{tmp_path}/run/./etcd/..") == f"{tmp_path}/run"
    assert paths.folder_names([me, me, 2**22 + 1], f"{tmp_path}/var/run/etcd") == {f"{tmp_path}/run/etcd"}


def test_a_link_loop_resolves_to_nothing(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert paths.resolve_in_root(os.getpid(), f"{tmp_path}/a/x") is None


def test_a_folder_name_that_is_not_utf8_still_makes_a_glob(tmp_path):
    odd = os.fsencode(tmp_path) + b"/\xff-data"
    os.mkdir(odd)
    os.symlink(odd, os.fsencode(tmp_path) + b"/link")
    [name] = paths.folder_names([os.getpid()], f"{tmp_path}/link")
    dfa = glob_dfa.compile_glob(f"{tmp_path}/link/*", layout.IO_ACCEPT_STATE, glob_dfa.escape(name) + "/*")
    assert dfa.matches(os.fsdecode(odd + b"/f")) and dfa.matches(f"{tmp_path}/link/f")
