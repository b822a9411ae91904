"""Timing helpers: interleaved repetitions, medians, per-operation costs.

The machines these run on are shared and noisy, so every comparison is made side by side: each repetition
runs every variant once (in a rotating order), and the report gives the median over repetitions of each
variant's cost and of each per-repetition ratio.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable, Dict, List, Optional

# A "loop" is a callable taking an iteration count n and doing the operation n times; it returns None, or
# the seconds of its own timed region when it prepares inputs that must stay out of the measurement.
Loop = Callable[[int], Optional[float]]


def time_loop(loop: Loop, n: int) -> float:
    """Seconds for ``loop(n)``, with the cyclic GC off (as timeit does) so a collection lands on no one."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        own = loop(n)
        elapsed = time.perf_counter() - start
        # a loop that must prepare untimed inputs (e.g. request objects) times itself and returns seconds
        return own if isinstance(own, float) else elapsed
    finally:
        if enabled:
            gc.enable()


def calibrate(loop: Loop, target_seconds: float, minimum: int = 50) -> int:
    """An iteration count that makes ``loop`` run about ``target_seconds``."""
    n = minimum
    while True:
        elapsed = time_loop(loop, n)
        if elapsed >= target_seconds / 4 or n >= 10_000_000:
            return max(minimum, int(n * target_seconds / max(elapsed, 1e-9)))
        n *= 4


def interleaved(loops: Dict[str, Loop], reps: int, target_seconds: float) -> Dict[str, List[float]]:
    """Per-operation seconds of each loop, ``reps`` samples each, the variants interleaved per repetition."""
    counts = {name: calibrate(loop, target_seconds) for name, loop in loops.items()}
    names = list(loops)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_loop(loops[name], counts[name]) / counts[name])
    return samples


def median(values: List[float]) -> float:
    return statistics.median(values)


def median_ratio(numerator: List[float], denominator: List[float]) -> float:
    """Median over repetitions of numerator[i] / denominator[i] (both measured in the same repetition)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))
