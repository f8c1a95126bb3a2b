"""Figures recorded at the precision their computation supports.

A float32 run carries about 7 significant digits, a float64 one about 12. The compiled CPU
engine gives the same bits on any x86-64 CPU, but the torch engines (another summation order
on a GPU) agree with it only to about those digits: recording more would make a rerun there
"change" every metric.
"""
from __future__ import annotations

import math

DIGITS = {"float32": 7, "float64": 12}


def significant(value: float, digits: int, magnitude: float | None = None) -> float:
    """value rounded to `digits` significant digits of `magnitude` (default: of value).

    A difference of two nearby figures (an excess loss) carries the absolute precision of
    the figures, not its own: round it on their scale.
    """
    value = float(value)
    magnitude = abs(value) if magnitude is None else abs(float(magnitude))
    if not math.isfinite(value) or value == 0 or magnitude == 0:
        return value
    decimals = digits - 1 - math.floor(math.log10(magnitude))
    return round(value, decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
