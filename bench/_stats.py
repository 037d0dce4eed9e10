"""What the benchmarks of bench/ report alike: medians of repeats, the load average, --smallest.

Not a benchmark itself (the leading underscore keeps it out of tests/integration/
test_bench_smallest.py's glob); the scripts import it as `_stats`, their own directory being
first on sys.path when run as `python bench/<script>.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
from collections.abc import Iterable, Iterator

MIN_REPEATS = 3
SMALLEST_HELP = "run the smallest meaningful size once (a smoke run: targets are not judged)"


def repeats(text: str) -> int:
    """argparse type of --repeat: a median of fewer than MIN_REPEATS runs is not a median."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number is needed, not {text!r}") \
            from None
    if value < MIN_REPEATS:
        raise argparse.ArgumentTypeError(
            f"at least {MIN_REPEATS} runs are needed, not {value} (the median of fewer "
            "is one disturbed run)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=repeats, default=MIN_REPEATS,
                        help=f"runs per method, interleaved; the median counts "
                             f"(default and minimum {MIN_REPEATS})")
    parser.add_argument("--smallest", action="store_true", help=SMALLEST_HELP)


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def ratio(value: float, baseline: float) -> str:
    """`value / baseline` as printed everywhere: 1.23x."""
    return f"{value / baseline:.2f}x"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min; {os.cpu_count()} cores)"


@contextlib.contextmanager
def load_reported() -> Iterator[None]:
    """The load average before and after the body (after also when it fails): this machine is
    shared, and a ratio measured under load says so next to it."""
    print(f"load average at start: {load_average()}", flush=True)
    try:
        yield
    finally:
        print(f"load average at end: {load_average()}", flush=True)
