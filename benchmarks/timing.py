"""Timing helpers shared by the benchmark sections."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 50) -> np.ndarray:
    """Per-call wall times in microseconds, after ``warmup`` untimed calls."""
    for _ in range(min(warmup, repeat)):
        fn()
    out = np.empty(repeat)
    for i in range(repeat):
        start = time.perf_counter_ns()
        fn()
        out[i] = (time.perf_counter_ns() - start) / 1000
    return out
