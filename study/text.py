"""How the report prints a number and a t-interval (one place for both)."""

from __future__ import annotations

import math
from typing import Any


def fmt(x: Any, digits: int = 3) -> str:
    """A number as the report prints it (None: n/a; booleans: yes/no)."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else "nan"
    return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.3e}"


def ci_text(c: dict[str, Any], digits: int = 3) -> str:
    """A t-interval as "mean ± half-width" (the mean alone for one seed)."""
    if c["half_width"] is None:
        return fmt(c["mean"], digits)
    return f"{fmt(c['mean'], digits)} ± {fmt(c['half_width'], digits)}"
