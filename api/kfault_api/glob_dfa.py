"""Path globs compiled to DFAs the BPF program walks byte by byte (bpf/iofault.c).

Syntax, as Chaos Mesh documents IOChaos paths: `*` any run of characters within a path
segment, `**` any run across segments (`a/**/b` also matches `a/b`), `?` one character but
`/`, `[abc]`, `[a-z]`, `[!a-z]` classes; everything else literal. Pure: no kernel here.
"""
from dataclasses import dataclass

SLASH = ord("/")
ANY_BYTE = frozenset(range(1, 256))          # NUL ends the path in the kernel
NOT_SLASH = ANY_BYTE - {SLASH}


class GlobError(ValueError):
    pass


@dataclass(frozen=True)
class Dfa:
    """next[state][byte] is a state index or None (no match possible); accepting[state]."""
    next: tuple
    accepting: tuple

    def matches(self, path):
        state = 0
        for byte in path.encode("utf-8", "surrogateescape"):
            state = self.next[state][byte]
            if state is None:
                return False
        return self.accepting[state]


def _tokens(glob):
    """('set', bytes) | ('star',) | ('globstar',) | ('globdir',): `**/`, nothing or any run
    of segments each ending in /."""
    tokens, i = [], 0
    data = glob.encode("utf-8", "surrogateescape")      # a name read from the kernel may not be UTF-8
    while i < len(data):
        c = data[i]
        if data[i:i + 3] == b"**/":
            tokens.append(("globdir",))
            i += 3
        elif data[i:i + 2] == b"**":
            tokens.append(("globstar",))
            i += 2
        elif c == ord("*"):
            tokens.append(("star",))
            i += 1
        elif c == ord("?"):
            tokens.append(("set", NOT_SLASH))
            i += 1
        elif c == ord("["):
            end = data.find(b"]", i + 2 if data[i + 1:i + 2] in (b"!", b"^") else i + 1)
            if end < 0:
                raise GlobError(f"an unclosed [ at {i}: close the class with ] (or write [[] for a literal [)")
            body = data[i + 1:end]
            negate = body[:1] in (b"!", b"^")
            body = body[1:] if negate else body
            members, j = set(), 0
            while j < len(body):
                if j + 2 < len(body) and body[j + 1] == ord("-"):
                    if body[j] > body[j + 2]:
                        raise GlobError(f"a backwards range {chr(body[j])}-{chr(body[j + 2])}: write it low-high")
                    members |= set(range(body[j], body[j + 2] + 1))
                    j += 3
                else:
                    members.add(body[j])
                    j += 1
            tokens.append(("set", frozenset((NOT_SLASH - members) if negate else members - {SLASH})))
            i = end + 1
        else:
            tokens.append(("set", frozenset({c})))
            i += 1
    return tokens


# NFA states are (which glob, position in its tokens, inside): `inside` marks a `**/` that has
# consumed something, which may end only at a /. Several globs make one DFA matching any of them.

def _closure(states, tokens):
    """States reachable without consuming a byte: past a star, past an unentered `**/`."""
    todo, seen = list(states), set(states)
    while todo:
        which, pos, inside = todo.pop()
        if pos < len(tokens[which]) and not inside and tokens[which][pos][0] in ("star", "globstar", "globdir"):
            if (which, pos + 1, False) not in seen:
                seen.add((which, pos + 1, False))
                todo.append((which, pos + 1, False))
    return frozenset(seen)


def _step(states, byte, tokens):
    out = set()
    for which, pos, _inside in states:
        if pos >= len(tokens[which]):
            continue
        kind = tokens[which][pos][0]
        if kind == "set" and byte in tokens[which][pos][1]:
            out.add((which, pos + 1, False))
        elif kind == "star" and byte != SLASH:
            out.add((which, pos, False))
        elif kind == "globstar":
            out.add((which, pos, False))
        elif kind == "globdir":
            out.add((which, pos, True))
            if byte == SLASH:
                out.add((which, pos + 1, False))
    return _closure(out, tokens)


def compile_glob(glob, max_states, *alternatives):
    """The DFA of `glob` (absolute, a path from /), or of any of it and `alternatives` (the
    same glob under other names of its folder); GlobError if it is bad or too big."""
    for each in (glob,) + alternatives:
        if not each.startswith("/"):
            raise GlobError("an absolute path glob, starting with /")
        if "\0" in each:
            raise GlobError("a path without NUL bytes")
    return _compile([_tokens(each) for each in (glob,) + alternatives], max_states)


def _compile(tokens, max_states):
    """The DFA of the token lists (any of them matching); GlobError if it is too big."""
    start = _closure({(which, 0, False) for which in range(len(tokens))}, tokens)
    index, order = {start: 0}, [start]
    table = []
    while len(table) < len(order):
        states = order[len(table)]
        row = [None] * 256
        for byte in range(1, 256):
            nxt = _step(states, byte, tokens)
            if not nxt:
                continue
            if nxt not in index:
                if len(order) >= max_states:
                    raise GlobError(f"a simpler glob: this one needs more than {max_states} matching states "
                                    "(fewer * and ** around literal parts)")
                index[nxt] = len(order)
                order.append(nxt)
            row[byte] = index[nxt]
        table.append(tuple(row))
    return Dfa(tuple(table), tuple(any((which, len(tokens[which]), False) in states
                                       for which in range(len(tokens))) for states in order))


def literal_folder(glob):
    """The leading folders of `glob` that have no wildcard, and the rest:
    "/var/run/etcd/**/*" -> ("/var/run/etcd", "**/*")."""
    parts = glob.split("/")
    literal = 1
    while literal < len(parts) - 1 and not any(c in parts[literal] for c in "*?["):
        literal += 1
    return "/".join(parts[:literal]) or "/", "/".join(parts[literal:])


def escape(path):
    """`path` as a glob that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


# ---- DNS names (DNSChaos patterns) ------------------------------------------------------

NAME_MAX = 253            # a name's text, without the final dot (RFC 1035's 255 octets on the wire)
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.?*")


def _either_case(byte):
    return frozenset({byte, ord(chr(byte).upper())}) if chr(byte).isalpha() else frozenset({byte})


def compile_name_globs(patterns, max_states):
    """One DFA matching a query name that any of `patterns` matches, case-insensitively, as the
    kernel spells it: the wire's label lengths each read as a dot, so "www.example.test" is
    walked as ".www.example.test". `?` is one character, `*` any run (dots too: Chaos Mesh's
    trailing `*` takes every name under it); no pattern means every name."""
    globs = []
    for pattern in patterns or ("*",):
        text = pattern.lower().rstrip(".")
        if not text or len(text) > NAME_MAX or not set(text.encode()) <= _NAME_BYTES:
            raise GlobError(f"a DNS name of letters, digits, '-', '_' and dots, up to {NAME_MAX} characters, "
                            "with `?` and `*` as wildcards")
        globs.append("." + text)
    tokens = []
    for glob in globs:
        tokens.append([("globstar",) if c == "*" else ("set", ANY_BYTE) if c == "?" else ("set", _either_case(ord(c)))
                       for c in glob])
    return _compile(tokens, max_states)


# ---- HTTP paths (HTTPChaos path) --------------------------------------------------------

HTTP_PATH_MAX = 255       # a request path's bytes we match (kfault.h's KFAULT_HTTP_PATH_MAX, its end)
# What a request line's path is made of: the bytes after the method's space up to the next space
# or `?` (the query is not part of the path; the kernel reads either as the path's end).
_PATH_BYTES = frozenset(range(0x21, 0x7f)) - {ord("?")}


def compile_http_path_glob(glob, max_states):
    """The DFA of an HTTPChaos path glob, matched as Chaos Mesh's proxy does: `*` any run of
    characters (`/` too), `?` one character, everything else literal; byte 0 ends the path."""
    data = glob.encode("utf-8", "surrogateescape")
    if not data or len(data) > HTTP_PATH_MAX or not set(data) <= _PATH_BYTES | {ord("?")}:
        raise GlobError(f"a request path of printable characters without spaces, up to {HTTP_PATH_MAX} bytes, "
                        "with `?` and `*` as wildcards")
    return _compile([[("globstar",) if c == ord("*") else ("set", _PATH_BYTES) if c == ord("?")
                      else ("set", frozenset({c})) for c in data]], max_states)
