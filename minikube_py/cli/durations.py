"""Go-style durations on the command line (``40s``, ``5m``, ``1m30s``, ``500ms``), as every
Kubernetes component accepts them, or a bare number of seconds."""

from __future__ import annotations

import argparse
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str | float | int) -> float:
    """Seconds from a Go-style duration (``"40s"``, ``"5m"``, ``"1m30s"``, ``"500ms"``) or a bare
    number of seconds (``"300"``)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(s)
        except ValueError:
            units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
            pos, value = 0, 0.0
            for m in _DURATION_PART.finditer(s):
                if m.start() != pos:
                    break
                value += float(m.group(1)) * units[m.group(2)]
                pos = m.end()
            if not s or pos != len(s):
                raise ValueError(f"invalid duration {text!r}: use e.g. 40s, 5m, 1m30s, 500ms "
                                 "or a number of seconds") from None
    if value < 0 or value != value:
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    return value


def duration_arg(text: str) -> float:
    """An argparse ``type=`` that turns a bad duration into a usage error."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
