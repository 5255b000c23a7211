"""How an error message shows a value someone sent: whole when short, cut when long.

Errors travel in gRPC status messages (at most 16 KB of metadata), in Kubernetes conditions
and in logs; a value of any size must leave the message readable and small.
"""

SHOWN_CHARS = 80


def quoted(value, limit=SHOWN_CHARS):
    """repr(value), or its first `limit` characters and how big the value was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    if isinstance(value, str):
        size = f"{len(value.encode('utf-8', 'surrogatepass'))} bytes"
    elif isinstance(value, (bytes, bytearray)):
        size = f"{len(value)} bytes"
    else:
        size = f"{len(text)} characters"
    return f"{text[:limit]}... ({size})"
