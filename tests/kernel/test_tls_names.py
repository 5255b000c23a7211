"""bpf/lib/tls.h: the server name of a TLS ClientHello read in the kernel, run with
BPF_PROG_TEST_RUN over the first records real clients sent (python ssl, openssl s_client and
curl on TLS 1.2 and 1.3, wget on GnuTLS, whose name comes after other extensions), over the
same hellos as Chrome sends them (GREASE, shuffled extensions, a post-quantum key share before
the name), and over every cut and many corruptions of them: the kernel reads the name a
plain parser of the same rules reads (tests/client_hellos.py), never another, and matches it
against DNS-style globs case-insensitively. tls_probe.c is tls.h alone, in a tc program.
Host tier only: 6.1's verifier sees tls.h in httpfault.c (test_https_faults.py's delay), and
here, under TCG, compiling the probe and running eight clients took four minutes."""
import os
import random

import pytest

from kfault_agent.kernel import loader, maps
from kfault_api import glob_dfa, layout
from tests import client_hellos, prog_test_run

pytestmark = pytest.mark.kernel("tc-bpf")
PROBE = os.path.join(os.path.dirname(__file__), "tls_probe.c")
NO_NAME, NAME_READ, NAME_MATCHED = 0, 1, 2     # tls_probe's answers
CORRUPTIONS = 300      # random corruptions of each hello: a few seconds of test runs


@pytest.fixture(scope="module")
def probe():
    programs = loader.TcPrograms(PROBE, ["tls_probe"], cflags=[f"-I{loader.BPF_DIR}", "-Wno-macro-redefined"])
    yield programs
    programs.close()


@pytest.fixture(scope="module")
def hellos():
    from kfault_lab.hosts import Lab

    lab = Lab()
    try:
        yield client_hellos.hellos_from_clients(lab, "clients")
    finally:
        lab.close()


def arm(probe, *patterns):
    dfa = glob_dfa.compile_name_globs(patterns, layout.IO_ACCEPT_STATE)
    maps.write_padded_dfa(probe.table("kfault_test_tls_dfa"), 0, dfa)


def read(probe, payload, ipv6=False, tcp_options=b""):
    """(tls_probe's answer, the name it read or None) for one segment carrying `payload`."""
    answer = prog_test_run.run(probe.fd("tls_probe"), prog_test_run.tcp_segment(payload, ipv6, tcp_options))
    out = probe.table("kfault_test_tls_name")[0]
    return answer, bytes(out.name[1:out.len]) if answer != NO_NAME else None


def expected(payload):
    return client_hellos.server_name(payload, layout.TLS_MAX_EXTENSIONS, layout.TLS_NAME_MAX)


def matches(dfa, name):
    """Does the glob's DFA match `name`, byte by byte (a corrupted name need not be UTF-8)?"""
    state = 0
    for byte in b"." + name:
        state = dfa.next[state][byte]
        if state is None:
            return False
    return dfa.accepting[state]


def test_reads_the_server_name_of_real_clients_hellos(probe, hellos):
    arm(probe, "*.example.test")
    for client, (hello, name) in hellos.items():
        for framing in ({}, {"ipv6": True}, {"tcp_options": b"\x01\x01\x08\x0a" + bytes(8)}):  # timestamps
            answer, read_name = read(probe, hello, **framing)
            if name is None:
                assert (answer, read_name) == (NO_NAME, None), (client, framing)
            else:
                assert (answer, read_name) == (NAME_MATCHED, name.encode()), (client, framing)
    arm(probe, "www.example.test")      # case-insensitive, as DNS names
    assert read(probe, hellos["openssl s_client TLS 1.3"][0]) == (NAME_READ, b"Api.Example.TEST")
    arm(probe, "API.example.*")
    assert read(probe, hellos["openssl s_client TLS 1.3"][0]) == (NAME_MATCHED, b"Api.Example.TEST")
    assert read(probe, hellos["curl TLS 1.3"][0]) == (NAME_READ, b"www.example.test")


def test_reads_the_name_where_other_clients_put_it(probe, hellos):
    """GREASE and a shuffled order (Chrome), a post-quantum key share before the name (a hello
    over one packet's size: the GSO segment a tc program sees), the name as the last extension
    walked; one past it is not read (a limit the docs state)."""
    arm(probe, "www.example.*")
    for client in ("curl TLS 1.3", "python-ssl TLS 1.2", "wget (GnuTLS)"):
        hello = hellos[client][0]
        for seed in range(4):
            chrome = client_hellos.as_chrome_sends(hello, seed)
            assert expected(chrome) == b"www.example.test"
            assert read(probe, chrome) == (NAME_MATCHED, b"www.example.test"), (client, seed)
        large = client_hellos.with_large_key_share(hello)
        assert len(large) > 1460        # one segment's payload on a 1,500-byte link
        assert read(probe, large) == (NAME_MATCHED, b"www.example.test"), client
        last = client_hellos.with_name_at(hello, layout.TLS_MAX_EXTENSIONS)
        assert read(probe, last) == (NAME_MATCHED, b"www.example.test"), client
        assert read(probe, client_hellos.with_name_at(hello, layout.TLS_MAX_EXTENSIONS + 1)) == (NO_NAME, None)


def test_a_cut_hello_reads_its_name_only_once_whole(probe, hellos):
    """Every cut of every hello (a ClientHello split over segments): no name until the name's
    last byte is in the segment, then the name."""
    arm(probe, "*")
    for client, (hello, name) in hellos.items():
        for cut in range(len(hello) + 1):
            want = expected(hello[:cut])
            assert want in (None, name and name.encode()), (client, cut)
            answer, got = read(probe, hello[:cut])
            assert got == want, (client, cut)
            assert answer == (NO_NAME if want is None else NAME_MATCHED), (client, cut)


def test_a_malformed_hello_reads_no_wrong_name(probe, hellos):
    """Each length field set to values around its right one and to extremes, and random bytes
    corrupted: the kernel reads exactly what the parser of tls.h's rules reads (mostly nothing),
    and matches exactly where the glob does."""
    patterns = ("www.example.test", "*.example.tes?")
    arm(probe, *patterns)
    dfa = glob_dfa.compile_name_globs(patterns, layout.IO_ACCEPT_STATE)
    rng = random.Random(24)
    for client, (hello, _name) in hellos.items():
        variants = []
        for offset, size in client_hellos.length_fields(hello):
            right = int.from_bytes(hello[offset:offset + size], "big")
            for value in {0, 1, right - 1, right + 1, right + 2, right - 3, (1 << 8 * size) - 1, 1 << (8 * size - 1)}:
                if 0 <= value < 1 << 8 * size:
                    variants.append(hello[:offset] + value.to_bytes(size, "big") + hello[offset + size:])
        for _ in range(CORRUPTIONS):
            bad = bytearray(hello)
            for _ in range(rng.randint(1, 3)):
                bad[rng.randrange(min(len(bad), 120))] = rng.randrange(256)   # in the headers and the name, mostly
            variants.append(bytes(bad))
        for bad in variants:
            want = expected(bad)
            answer, got = read(probe, bad)
            assert got == want, (client, bad.hex())
            if want is not None:
                assert answer == (NAME_MATCHED if matches(dfa, want) else NAME_READ), (client, bad.hex())


def test_odd_names_are_read_as_a_server_would(probe, hellos):
    """A final dot is dropped; a name with a NUL, an empty one, one longer than a DNS name, a
    name of another type: none read."""
    hello = hellos["curl TLS 1.3"][0]
    arm(probe, "www.example.test")
    for name, want in ((b"www.example.test.", b"www.example.test"), (b"www.example.test\0.evil", None),
                       (b"\0www.example.test", None), (b".", None), (b"", None), (b"a" * 253 + b".", b"a" * 253),
                       (b"a" * 254, b"a" * 254), (b"a" * 255, None)):
        bad = with_name(hello, name)
        assert expected(bad) == want, name
        answer, got = read(probe, bad)
        assert got == want, name
        assert answer == (NAME_MATCHED if want == b"www.example.test" else NAME_READ if want else NO_NAME), name
    other_type = with_name(hello, b"www.example.test", name_type=1)
    assert read(probe, other_type) == (NO_NAME, None)


def with_name(hello, name, name_type=0):
    head, extensions = client_hellos.split(hello)
    entry = bytes([name_type]) + len(name).to_bytes(2, "big") + name
    data = len(entry).to_bytes(2, "big") + entry
    return client_hellos.join(head, [(kind, data if kind == client_hellos.SERVER_NAME_EXTENSION else old)
                                     for kind, old in extensions])
