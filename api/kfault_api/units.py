"""Value formats of Chaos Mesh specs: Go durations, tc rates and sizes, percent strings."""
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NS_PER_UNIT = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9,
                "m": 60 * 10**9, "h": 3600 * 10**9}

# tc(8) units: "bit" family is bits per second, "bps" family is bytes per second.
_RATE_BITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9, "tbit": 10**12,
              "kibit": 2**10, "mibit": 2**20, "gibit": 2**30, "tibit": 2**40}
_RATE_BYTES = {"bps": 1, "kbps": 10**3, "mbps": 10**6, "gbps": 10**9, "tbps": 10**12,
               "kibps": 2**10, "mibps": 2**20, "gibps": 2**30, "tibps": 2**40}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)([a-z]+)$")


def parse_duration_ns(text):
    """Go's time.ParseDuration, non-negative: "90ms", "1m30s", "1.5s". Raises ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError("a duration such as \"90ms\", \"30s\" or \"1m30s\"")
    if text == "0":
        return 0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError("a duration such as \"90ms\", \"30s\" or \"1m30s\" (units ns, us, ms, s, m, h)")
        total += float(match.group(1)) * _NS_PER_UNIT[match.group(2)]
        pos = match.end()
    return int(round(total))


def parse_rate_bytes_per_sec(text):
    """tc's rate syntax: "10mbit" (bits/s), "1mbps" (bytes/s). Returns bytes per second."""
    match = _RATE.match(str(text).strip().lower())
    if match and match.group(2) in _RATE_BITS:
        value = float(match.group(1)) * _RATE_BITS[match.group(2)] / 8
    elif match and match.group(2) in _RATE_BYTES:
        value = float(match.group(1)) * _RATE_BYTES[match.group(2)]
    else:
        raise ValueError("a rate such as \"10mbit\" (bits/s) or \"1mbps\" (bytes/s), as tc(8) writes it")
    if value < 1:
        raise ValueError("a rate of at least 8bit")
    return int(value)


def parse_percent(text):
    """Chaos Mesh's percent strings: "25", "0.5" (also plain numbers). 0 to 100."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError("a percent from 0 to 100, such as \"25\" or \"0.5\"") from None
    if not 0 <= value <= 100:
        raise ValueError("a percent from 0 to 100")
    return value


# go-humanize's ParseBytes, which Chaos Mesh's memStress reads spec.stressors.memory.size with:
# SI units (kB, MB, GB: powers of 1000) and IEC units (KiB, MiB, GiB: powers of 1024), any case,
# the trailing B optional ("256M" is 256MB); a plain number is bytes.
_SIZE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "p": 10**15, "pb": 10**15, "e": 10**18, "eb": 10**18,
               "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
               "ti": 2**40, "tib": 2**40, "pi": 2**50, "pib": 2**50, "ei": 2**60, "eib": 2**60}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)$")
# stress-ng's sizes (--vm-bytes, --hdd-bytes): b, k, m, g as powers of 1024.
_STRESS_NG_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size_bytes(text):
    """"256MB" (256 x 10^6 bytes), "1GiB" (2^30), "512Mi", "4096" -> bytes, as memStress reads
    them. Raises ValueError saying what is allowed."""
    match = _SIZE.match(str(text).strip().lower())
    if not match or match.group(2) not in _SIZE_UNITS:
        raise ValueError("a size such as \"256MB\" (10^6 bytes each), \"1GiB\" (2^30 bytes) or \"50%\"")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def parse_stress_ng_size(text):
    """stress-ng's size syntax: "256m", "1g" (powers of 1024), a plain number is bytes."""
    match = _SIZE.match(str(text).strip().lower())
    if not match or match.group(2) not in _STRESS_NG_UNITS:
        raise ValueError("a size as stress-ng writes it: a number with b, k, m or g (powers of 1024), "
                         "such as \"256m\"")
    return int(float(match.group(1)) * _STRESS_NG_UNITS[match.group(2)])


# stress-ng's --timeout: seconds, or a number with s, m, h, d, y.
_STRESS_NG_TIME_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "y": 31536000}


def parse_stress_ng_time_ns(text):
    match = _SIZE.match(str(text).strip().lower())
    if not match or match.group(2) not in _STRESS_NG_TIME_S:
        raise ValueError("a time as stress-ng writes it: seconds, or a number with s, m, h, d or y, such as \"600\"")
    return int(float(match.group(1)) * _STRESS_NG_TIME_S[match.group(2)] * 10**9)
