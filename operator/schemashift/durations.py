"""Durations: one grammar for every option, the one Kubernetes and Go write (time.ParseDuration).

`PATTERN` is the grammar itself: the runner, `wait` and the CRD's CEL rules all use it, so a
value one of them accepts is accepted by all. It is Go's grammar without a sign (no option takes
a negative duration), written without backslashes so it can sit inside a CEL string as it is.
The arithmetic keeps nanoseconds (a timedelta would round 500ns to zero, which CEL does not),
and the longest duration is Go's (2^63-1 ns, about 292 years); `durationpy` writes durations.
"""

from __future__ import annotations

import datetime
import re
from fractions import Fraction

import durationpy

from schemashift import errors

UNITS = ("ns", "us", "µs", "μs", "ms", "s", "m", "h")
_NUMBER = "([0-9]+([.][0-9]*)?|[.][0-9]+)"
PART = f"{_NUMBER}({'|'.join(UNITS)})"  # one number and its unit
PATTERN = f"^(0|({PART})+)$"
_PART = re.compile(f"(?P<number>{_NUMBER})(?P<unit>{'|'.join(UNITS)})")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
            "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_GO_MAX_NS = 2**63 - 1


def unit_seconds() -> dict[str, float]:
    """Seconds per unit (for renderings of the grammar elsewhere, e.g. the hook chart's)."""
    return {unit: ns / 1_000_000_000 for unit, ns in _UNIT_NS.items()}
EXAMPLES = "500ms, 5s, 2m, 1h30m or 1.5s"
HINT = f"write a number and a unit, as Kubernetes does: {EXAMPLES} (units: ns, us, ms, s, m, h)"
_GRAMMAR = re.compile(PATTERN)
_SHOWN = 40  # a value is no secret, but a pasted paragraph is not worth echoing whole


def shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "…")


def seconds(value: str, *, name: str) -> float:
    """'1h30m' → 5400.0; anything outside the grammar is a UsageError naming `name`."""
    text = str(value).strip()
    if text.startswith("-") and _GRAMMAR.fullmatch(text[1:]):
        raise errors.UsageError(f"{name} must not be negative, got {shown(value)}", hint=HINT)
    if _GRAMMAR.fullmatch(text) is None:
        hint = HINT
        if re.fullmatch(r"[0-9]+([.][0-9]*)?", text):
            hint = f"add a unit: {text}s for seconds, {text}ms for milliseconds ({EXAMPLES})"
        raise errors.UsageError(f"{name} {shown(value)} is not a duration", hint=hint)
    total_ns = sum(Fraction(part["number"]) * _UNIT_NS[part["unit"]]
                   for part in _PART.finditer(text))
    if total_ns > _GO_MAX_NS:
        raise errors.UsageError(f"{name} {shown(value)} is too long to be a duration",
                                hint=HINT)
    return float(total_ns / 1_000_000_000)


def text(total_seconds: float) -> str:
    """The shortest Go form: 300 → '5m', 5400 → '1h30m', 0.5 → '500ms', 0 → '0s'."""
    if total_seconds == 0:
        return "0s"

    return str(durationpy.to_str(datetime.timedelta(seconds=total_seconds)))


def bounded(value: str, *, name: str, maximum: float, zero_allowed: bool,
            zero_hint: str = "") -> float:
    """`seconds`, then within [0 or above, maximum]."""
    result = seconds(value, name=name)
    if result == 0 and not zero_allowed:
        raise errors.UsageError(f"{name} {shown(value)} must be greater than zero",
                                hint=zero_hint or f"use e.g. {EXAMPLES}")
    if result > maximum:
        raise errors.UsageError(
            f"{name} {shown(value)} is longer than the {text(maximum)} allowed",
            hint=f"use at most {text(maximum)}")
    return result
