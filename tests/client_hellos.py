"""TLS ClientHellos: captured from real clients in a lab host (a plain TCP listener takes the
first record the client sends and the client is cut off there: no server, no certificate),
rebuilt with their extensions changed as other clients send them (GREASE, Chrome's shuffled
order, a post-quantum key share), and read by a plain Python parser that follows the rules of
bpf/lib/tls.h, byte for byte: what the kernel must read, or not, from any bytes."""
import os
import random
import struct
import sys

SERVER_NAME = "www.example.test"
# What a client asks for, if not SERVER_NAME: a mixed-case name, which tls.h matches as DNS does.
MIXED_CASE_NAME = "Api.Example.TEST"
PORT = 443
# The record a client sends first, printed in hex by a listener on 127.0.0.1 in the lab host.
LISTENER = r"""
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", %d))
server.listen(1)
print("ready", flush=True)
server.settimeout(60)
conn, _ = server.accept()
conn.settimeout(30)
data = b""
while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
    chunk = conn.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.hex(), flush=True)
""" % PORT
PYTHON_CLIENT = ("import socket, ssl, sys; context = ssl.create_default_context(); "
                 "context.maximum_version = getattr(ssl.TLSVersion, sys.argv[2]); "
                 f"context.wrap_socket(socket.create_connection(('127.0.0.1', {PORT})), server_hostname=sys.argv[1])")
# Real clients, each as a command and the name it asks for (None: it sends none). Names
# resolve to 127.0.0.1 through the lab host's /etc/hosts (written by hellos_from_clients).
CLIENTS = {
    "python-ssl TLS 1.3": (f"{sys.executable} -c \"{PYTHON_CLIENT}\" {SERVER_NAME} TLSv1_3", SERVER_NAME),
    "python-ssl TLS 1.2": (f"{sys.executable} -c \"{PYTHON_CLIENT}\" {SERVER_NAME} TLSv1_2", SERVER_NAME),
    "openssl s_client TLS 1.3": (f"openssl s_client -connect 127.0.0.1:{PORT} -servername {MIXED_CASE_NAME} -tls1_3",
                                 MIXED_CASE_NAME),
    # ALPN and OCSP stapling: more extensions, after the name
    "openssl s_client TLS 1.2": (f"openssl s_client -connect 127.0.0.1:{PORT} -servername {SERVER_NAME} -tls1_2 "
                                 "-alpn h2,http/1.1 -status", SERVER_NAME),
    "openssl s_client, no name": (f"openssl s_client -connect 127.0.0.1:{PORT} -noservername", None),
    "curl TLS 1.3": (f"curl -sk --max-time 20 --tlsv1.3 https://{SERVER_NAME}:{PORT}/", SERVER_NAME),
    "curl TLS 1.2": (f"curl -sk --max-time 20 --tlsv1.2 --tls-max 1.2 https://{SERVER_NAME}:{PORT}/", SERVER_NAME),
    # GnuTLS: the name is the tenth extension, after a key share and renegotiation_info
    "wget (GnuTLS)": (f"wget -q -O- --tries=1 --timeout=20 --no-check-certificate https://{SERVER_NAME}:{PORT}/",
                      SERVER_NAME),
}

# RFC 8701's GREASE values: 0x0a0a, 0x1a1a, ... 0xfafa.
GREASE = [0x0A0A + 0x1010 * i for i in range(16)]
SERVER_NAME_EXTENSION = 0
KEY_SHARE_EXTENSION = 51
PADDING_EXTENSION = 21         # to 512 bytes; a longer hello has none
MLKEM768_X25519_SHARE = 1216      # X25519MLKEM768's key share: 1184 + 32 bytes


def hellos_from_clients(lab, host):
    """{client: (the first record it sent, the name it asked for)} of every client of CLIENTS,
    each run in `host` (a lab host, made here) against a listener there."""
    lab.host(host)
    folder = f"/etc/netns/{lab.ns(host)}"
    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/hosts", "w", encoding="ascii") as hosts:
        hosts.write(f"127.0.0.1 localhost {SERVER_NAME}\n")
    try:
        return {client: (capture(lab, host, command), name) for client, (command, name) in CLIENTS.items()}
    finally:
        os.remove(f"{folder}/hosts")
        os.rmdir(folder)


def capture(lab, host, command):
    """The first record `command` sends to 127.0.0.1:PORT in `host`."""
    listener = lab.popen(host, f"{sys.executable} -c '{LISTENER}'")
    try:
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()
        client = lab.popen(host, command, stdin=open(os.devnull))   # s_client ends at stdin's end
        try:
            record = bytes.fromhex(listener.stdout.readline().strip())
        finally:
            client.kill()
            client.wait()
    finally:
        listener.kill()
        listener.wait()
    assert len(record) > 5, f"{command}: sent {record!r}"
    return record


# ---- taking a ClientHello apart and putting it back ------------------------------------

def split(hello):
    """(the bytes before the extensions, [(type, data), ...]) of a well-formed ClientHello."""
    at = 5 + 4 + 2 + 32
    at += 1 + hello[at]
    at += 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 1 + hello[at]
    length = int.from_bytes(hello[at:at + 2], "big")
    at += 2
    extensions, end = [], at + length
    head = hello[:at - 2]
    while at < end:
        kind, size = struct.unpack_from(">HH", hello, at)
        extensions.append((kind, hello[at + 4:at + 4 + size]))
        at += 4 + size
    return head, extensions


def join(head, extensions):
    """A ClientHello of `head` (split's) and these extensions, its three lengths made right."""
    body = b"".join(struct.pack(">HH", kind, len(data)) + data for kind, data in extensions)
    hello = bytearray(head + struct.pack(">H", len(body)) + body)
    struct.pack_into(">H", hello, 3, len(hello) - 5)
    hello[6:9] = (len(hello) - 9).to_bytes(3, "big")
    return bytes(hello)


def as_chrome_sends(hello, seed):
    """The hello with its extensions as Chrome sends them: shuffled (the name last here), a
    GREASE extension first and one with a byte of data last, GREASE cipher suite first."""
    head, extensions = split(hello)
    rng = random.Random(seed)
    others = [e for e in extensions if e[0] != SERVER_NAME_EXTENSION]
    rng.shuffle(others)
    name = [e for e in extensions if e[0] == SERVER_NAME_EXTENSION]
    grease = rng.sample(GREASE, 2)
    head = add_grease_cipher(head, rng.choice(GREASE))
    return join(head, [(grease[0], b"")] + others + name + [(grease[1], b"\x00")])


def add_grease_cipher(head, value):
    at = 5 + 4 + 2 + 32
    at += 1 + head[at]
    length = int.from_bytes(head[at:at + 2], "big")
    return head[:at] + struct.pack(">HH", length + 2, value) + head[at + 2:]


def with_large_key_share(hello):
    """The hello with key shares of X25519MLKEM768 and X25519 before its name, as Chrome's and
    OpenSSL 3.5's: the hello is then longer than one segment on a 1,500-byte link."""
    head, extensions = split(hello)
    share = (struct.pack(">HH", 0x11EC, MLKEM768_X25519_SHARE) + os.urandom(MLKEM768_X25519_SHARE)
             + struct.pack(">HH", 0x001D, 32) + os.urandom(32))
    share = struct.pack(">H", len(share)) + share
    others = [e for e in extensions if e[0] not in (SERVER_NAME_EXTENSION, KEY_SHARE_EXTENSION, PADDING_EXTENSION)]
    name = [e for e in extensions if e[0] == SERVER_NAME_EXTENSION]
    return join(head, [(KEY_SHARE_EXTENSION, share)] + others + name)


def with_name_at(hello, position):
    """The hello with empty GREASE extensions before its name, which is then extension
    number `position` (from 1)."""
    head, extensions = split(hello)
    name = [e for e in extensions if e[0] == SERVER_NAME_EXTENSION]
    others = [e for e in extensions if e[0] != SERVER_NAME_EXTENSION][:position - 1]
    others += [(GREASE[i % len(GREASE)], b"") for i in range(position - 1 - len(others))]
    return join(head, others + name)


def length_fields(hello):
    """(offset, size) of every length field of a well-formed hello, outermost first: the ones a
    malformed hello gets wrong."""
    fields = [(3, 2), (6, 3)]
    at = 5 + 4 + 2 + 32
    fields.append((at, 1))
    at += 1 + hello[at]
    fields.append((at, 2))
    at += 2 + int.from_bytes(hello[at:at + 2], "big")
    fields.append((at, 1))
    at += 1 + hello[at]
    fields.append((at, 2))
    end = at + 2 + int.from_bytes(hello[at:at + 2], "big")
    at += 2
    while at < end:
        kind, size = struct.unpack_from(">HH", hello, at)
        fields.append((at + 2, 2))
        if kind == SERVER_NAME_EXTENSION:
            fields += [(at + 4, 2), (at + 7, 2)]    # the list's length, the name's
        at += 4 + size
    return fields


# ---- what tls.h reads ------------------------------------------------------------------

def server_name(payload, max_extensions, name_max):
    """The server name bpf/lib/tls.h reads from a TCP payload (bytes, its final dot dropped),
    or None: the same checks in the same order, a read past the payload's end failing as
    bpf_skb_load_bytes does. max_extensions, name_max: KFAULT_TLS_MAX_EXTENSIONS, _NAME_MAX."""
    def load(at, size):
        if at + size > len(payload):
            raise IndexError
        return payload[at:at + size]

    def number(at, size):
        return int.from_bytes(load(at, size), "big")

    try:
        start = load(0, 44)
        if (start[0] != 22 or start[1] != 3 or start[5] != 1 or start[9] != 3 or start[43] > 32
                or number(3, 2) > 16384):
            return None
        hello_length = number(6, 3)
        if 4 + hello_length > number(3, 2):
            return None
        end = 9 + hello_length
        at = 44 + start[43]
        suites = number(at, 2)
        if not suites or suites & 1:
            return None
        at += 2 + suites
        methods = number(at, 1)
        if not methods:
            return None
        at += 1 + methods
        length = number(at, 2)
        at += 2
        if at + length > end:
            return None
        ext_end = at + length
        for _ in range(max_extensions):
            if at + 4 > ext_end:
                return None
            kind, size = number(at, 2), number(at + 2, 2)
            if at + 4 + size > ext_end:
                return None
            if kind == SERVER_NAME_EXTENSION:
                break
            at += 4 + size
        else:
            return None
        at += 4
        if size < 5:
            return None
        list_length, name_type, name_length = number(at, 2), number(at + 2, 1), number(at + 3, 2)
        if name_type != 0 or 2 + list_length > size or 3 + name_length > list_length:
            return None
        if not 1 <= name_length <= name_max - 2:
            return None
        name = load(at + 5, name_length)
    except IndexError:
        return None
    if name.endswith(b"."):
        name = name[:-1]
    if not name or b"\0" in name:
        return None
    return name
