"""Path globs compiled to the DFAs the kernel walks: pure logic, checked against fnmatch-like cases."""
import pytest

from kfault_api import glob_dfa, layout


def matches(glob, path):
    return glob_dfa.compile_glob(glob, layout.IO_ACCEPT_STATE).matches(path)


@pytest.mark.parametrize("glob, path, expected", [
    ("/data/*.db", "/data/a.db", True),
    ("/data/*.db", "/data/x/a.db", False),            # * stays within a segment
    ("/data/**", "/data/x/y/z", True),
    ("/data/**", "/datax", False),
    ("/var/run/etcd/**/*", "/var/run/etcd/member/wal/0.wal", True),
    ("/var/run/etcd/**/*", "/var/run/etcd/a", True),
    ("/a/**/b.txt", "/a/b.txt", True),                # **/ may match nothing
    ("/a/**/b.txt", "/a/x/y/b.txt", True),
    ("/a/**/b.txt", "/a/xb.txt", False),              # ... but only whole segments
    ("/log/f[0-9]?.log", "/log/f1a.log", True),
    ("/log/f[0-9]?.log", "/log/fxa.log", False),
    ("/log/f[!0-9].log", "/log/fx.log", True),
    ("/log/f[!0-9].log", "/log/f1.log", False),
    ("/exact/path", "/exact/path", True),
    ("/exact/path", "/exact/pathx", False),
])
def test_glob_semantics(glob, path, expected):
    assert matches(glob, path) is expected


@pytest.mark.parametrize("glob, words", [
    ("relative/*", "absolute"),
    ("/a/[z-a]", "low-high"),
    ("/a/[abc", "unclosed"),
])
def test_bad_globs_say_what_to_write(glob, words):
    with pytest.raises(glob_dfa.GlobError, match=words):
        glob_dfa.compile_glob(glob, layout.IO_ACCEPT_STATE)


def test_long_literal_paths_fit_and_state_count_is_bounded():
    glob = "/var/lib/kubelet/pods/" + "x" * 150 + "/volumes/**"
    dfa = glob_dfa.compile_glob(glob, layout.IO_ACCEPT_STATE)
    assert len(dfa.next) < layout.IO_ACCEPT_STATE
    assert dfa.matches(glob.replace("**", "a/b"))
    with pytest.raises(glob_dfa.GlobError, match="simpler glob"):
        glob_dfa.compile_glob("/" + "x" * 300, layout.IO_ACCEPT_STATE)


def test_one_dfa_matches_a_glob_under_each_name_of_its_folder():
    dfa = glob_dfa.compile_glob("/var/run/etcd/**/*", layout.IO_ACCEPT_STATE, "/run/etcd/**/*")
    assert dfa.matches("/var/run/etcd/member/wal/0.wal") and dfa.matches("/run/etcd/member/wal/0.wal")
    assert not dfa.matches("/run/etcdx/a") and not dfa.matches("/var/run/other/a")


@pytest.mark.parametrize("glob, folder, rest", [
    ("/var/run/etcd/**/*", "/var/run/etcd", "**/*"),
    ("/data/x.db", "/data", "x.db"),
    ("/a.db", "/", "a.db"),
    ("/data/f[0-9]/x", "/data", "f[0-9]/x"),
    ("/data/", "/data", ""),
])
def test_the_literal_folder_of_a_glob_is_the_part_before_any_wildcard(glob, folder, rest):
    assert glob_dfa.literal_folder(glob) == (folder, rest)


def test_an_escaped_folder_matches_only_itself():
    dfa = glob_dfa.compile_glob(glob_dfa.escape("/odd[1]/*?") + "/x", layout.IO_ACCEPT_STATE)
    assert dfa.matches("/odd[1]/*?/x") and not dfa.matches("/odd1/ab/x")


@pytest.mark.parametrize("patterns, name, expected", [
    (["*.example.test"], ".www.example.test", True),
    (["*.example.test"], ".WWW.Example.TEST", True),           # DNS compares names case-insensitively
    (["*.example.test"], ".a.b.example.test", True),           # `*` takes dots too
    (["*.example.test"], ".example.test", False),
    (["chaos-mesh.*"], ".chaos-mesh.org", True),               # Chaos Mesh's trailing `*`
    (["chaos-mesh.*"], ".chaos-mesh", False),
    (["github.?om"], ".github.com", True),
    (["github.?om"], ".github.om", False),
    (["google.com."], ".google.com", True),                    # a trailing dot is the root's
    ([], ".anything.at.all", True),                            # no pattern: every name
    (["a.test", "b.test"], ".b.test", True),                   # one DFA for every pattern
    (["a.test"], ".xa.test", False),
])
def test_name_glob_semantics(patterns, name, expected):
    assert glob_dfa.compile_name_globs(patterns, layout.IO_ACCEPT_STATE).matches(name) is expected


@pytest.mark.parametrize("glob, path, expected", [
    ("/api/*", "/api/items", True),
    ("/api/*", "/api/v1/items/3", True),                  # `*` takes `/` too, as Chaos Mesh's proxy
    ("/api/*", "/api", False),
    ("/api/*", "/apix/1", False),
    ("/api", "/api", True),
    ("/api", "/api/1", False),
    ("*", "/", True),
    ("/item/?", "/item/7", True),
    ("/item/?", "/item/77", False),
])
def test_http_path_glob_semantics(glob, path, expected):
    assert glob_dfa.compile_http_path_glob(glob, layout.IO_ACCEPT_STATE).matches(path) is expected
