"""The one GSM8K answer parser, with lm-evaluation-harness's gsm8k filters (what users compare
against).

- strict: the first match of ``#### (-?[0-9.,]+)`` (lm-eval's "strict-match");
- flexible: the last match of ``(-?[$0-9.,]{2,})|(-?[0-9]+)`` anywhere in the response
  (lm-eval's "flexible-extract", ``group_select: -1``): in "#### 42 ... so 43" it is 43.

A prediction is correct when it equals the gold answer after lm-eval's normalisation: commas and
dollar signs removed, a trailing period dropped (``regexes_to_ignore``), compared as text, so
"1,234" matches "1234" and "12.50" does not match "12.5" (it does not in lm-eval either).
:func:`final_line_answer` holds training data to the GSM8K format: the last non-empty line is
exactly ``#### N``. :func:`gold_answer` is the gold answer of a math example.
"""

from __future__ import annotations

import re
from typing import Any

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_FINAL_LINE = re.compile(r"^####\s*(-?[\d,]*\.?\d+)\s*$")


def normalize(answer: str) -> str:
    """lm-eval's normalisation of a gsm8k answer: commas and "$" removed, a trailing "." dropped,
    surrounding spaces stripped."""
    return re.sub(r"\.$", "", answer.replace(",", "").replace("$", "").strip())


def strict_answer(text: str) -> str | None:
    """The number after the first ``#### `` (normalised), or None."""
    match = _STRICT.search(text)
    return normalize(match.group(1)) if match else None


def flexible_answer(text: str) -> str | None:
    """The last number-like span anywhere in the text (normalised), or None."""
    matches = _FLEXIBLE.findall(text)
    if not matches:
        return None
    last = next(group for group in matches[-1] if group)
    return normalize(last)


def extract_answer(text: str) -> tuple[str | None, str | None]:
    """(strict, flexible) answers of a generated solution."""
    return strict_answer(text), flexible_answer(text)


def final_line_answer(solution: str) -> str | None:
    """N of a solution whose last non-empty line is exactly ``#### N`` (commas dropped), or
    None when the solution does not end that way."""
    lines = [ln.strip() for ln in solution.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    match = _FINAL_LINE.match(lines[-1])
    return None if match is None else match.group(1).replace(",", "")


def answers_match(predicted: str | None, gold: str) -> bool:
    """lm-eval's exact match of normalised answers; None never matches."""
    return predicted is not None and normalize(predicted) == normalize(gold)


def gold_answer(example: Any) -> str:
    """Gold answer of a math example (normalised): ``meta['answer']``, else after "####"."""
    meta = getattr(example, "meta", {}) or {}
    if "answer" in meta:
        value = normalize(str(meta["answer"]))
    else:
        value = strict_answer(example.messages[-1].content) or ""
    if not value:
        raise ValueError(f"math example has no gold answer: {meta}")
    return value
