"""One way of writing numbers in every view: Python's twin of the views' `fmtNum`/`axisLabels`.

The views (static/shared.js) write losses, learning rates and colour limits with `fmtNum` and
label plot axes with `axisLabels`; what Python writes (status texts, controls, matplotlib
figures) must read the same, and a test runs both on the same numbers.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal


def format_number(value: float, digits: int = 3) -> str:
    """`value` as the views' `fmtNum` (shared.js) writes it: 0.0436, 1.25e-4, 3.20e+4, NaN.

    Rounds half up on the exact binary value, as JavaScript's toPrecision/toExponential do
    (Python's own formatting rounds half to even: 1234.5 -> 1234 where JavaScript writes 1235).
    """
    if not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    exact = Decimal(abs(value))
    rounded = exact.quantize(Decimal(1).scaleb(exact.adjusted() - digits + 1), ROUND_HALF_UP)
    if exact < Decimal("1e-3") or exact >= Decimal("1e4"):
        mantissa = rounded.scaleb(-rounded.adjusted()).quantize(Decimal(1).scaleb(1 - digits))
        return f"{sign}{mantissa}e{rounded.adjusted():+d}"
    text = repr(float(rounded))  # the shortest form, as JavaScript's String(Number(...))
    return sign + (text[:-2] if text.endswith(".0") else text)


def axis_labels(ticks: list[float]) -> list[str]:
    """Tick labels as the views' `axisLabels` writes them.

    Each tick in `format_number` with the fewest significant digits (up to 4) that write it
    exactly: 0.001 / 8e-4 / 6e-4, 0.5 / 1 / 1.5.
    """
    return [_exact_label(float(v)) for v in ticks]


def _exact_label(value: float) -> str:
    for digits in range(1, 4):
        label = format_number(value, digits)
        if abs(float(label) - value) <= 1e-9 * abs(value):
            return label
    return format_number(value, 4)


def axis_formatter():
    """A matplotlib tick formatter that labels an axis with `axis_labels`."""
    from matplotlib.ticker import Formatter

    class AxisLabels(Formatter):
        def __call__(self, x, pos=None):  # one value alone, e.g. the cursor readout
            return format_number(float(x))

        def format_ticks(self, values):
            return axis_labels([float(v) for v in values])

    return AxisLabels()
