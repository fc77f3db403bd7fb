"""The one GSM8K answer parser: numbers in solutions, generated and gold.

- :func:`extract_answer` reads a generated solution: ``strict`` is the first number after the
  last ``####``; ``flexible`` is the strict answer when there is one, else the last number
  anywhere in the text.
- :func:`final_line_answer` holds training data to the GSM8K format: the last non-empty line is
  exactly ``#### N`` (N returned as written, thousands separators removed).
- :func:`gold_answer` is the gold number of a math example.
"""

from __future__ import annotations

import math
import re
from typing import Any

# A number with optional sign and "$" in either order, thousands commas and decimals.
_NUMBER = re.compile(r"(-)?\s*\$?\s*(-)?(\d[\d,]*(?:\.\d+)?|\.\d+)")
# "#### 1,234" / "#### -3.5" as a whole line.
_FINAL_LINE = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")


def _to_float(match: re.Match) -> float:
    value = float(match.group(3).replace(",", ""))
    return -value if (match.group(1) or match.group(2)) else value


def parse_number(text: str) -> float | None:
    """The first number in ``text`` ("$1,234.50" -> 1234.5, "-$3" -> -3.0), or None."""
    match = _NUMBER.search(text)
    return _to_float(match) if match else None


def last_number(text: str) -> float | None:
    """The last number in ``text``, or None."""
    matches = list(_NUMBER.finditer(text))
    return _to_float(matches[-1]) if matches else None


def extract_answer(text: str) -> tuple[float | None, float | None]:
    """(strict, flexible) answers of a generated solution (see the module docstring)."""
    strict = None
    if "####" in text:
        strict = parse_number(text.rsplit("####", 1)[1])
    flexible = strict if strict is not None else last_number(text)
    return strict, flexible


def final_line_answer(solution: str) -> str | None:
    """N of a solution whose last non-empty line is exactly ``#### N`` (commas dropped), or
    None when the solution does not end that way."""
    lines = [ln.strip() for ln in solution.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    match = _FINAL_LINE.match(lines[-1])
    return None if match is None else match.group(1).replace(",", "")


def answers_match(predicted: float | None, gold: float) -> bool:
    """Equal up to float noise (1e-9 relative, 1e-6 absolute); None never matches."""
    return predicted is not None and math.isclose(predicted, gold, rel_tol=1e-9, abs_tol=1e-6)


def gold_answer(example: Any) -> float:
    """Gold number of a math example: ``meta['answer']``, else after "####" in its answer."""
    meta = getattr(example, "meta", {}) or {}
    if "answer" in meta:
        value = parse_number(str(meta["answer"]))
    else:
        value = extract_answer(example.messages[-1].content)[0]
    if value is None:
        raise ValueError(f"math example has no gold answer: {meta}")
    return value
