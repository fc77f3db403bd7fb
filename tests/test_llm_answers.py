"""The one GSM8K answer parser follows lm-evaluation-harness's gsm8k filters (strict-match:
first "#### N"; flexible-extract: the last number anywhere), on strings shared with lm-eval's."""

from __future__ import annotations

import pytest

from llm.answers import (
    answers_match,
    extract_answer,
    final_line_answer,
    gold_answer,
    normalize,
)
from llm.chat import ChatExample, Message


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("3 + 4 = 7\n#### 7", "7", "7"),
        ("#### 42 ... so 43", "42", "43"),  # lm-eval: flexible is the LAST number, not strict's
        ("total 1,234 apples\n#### 1,234", "1234", "1234"),
        ("it costs $5 each\n#### $12.50", None, "12.50"),  # strict needs a digit after "#### "
        ("#### -3", "-3", "-3"),
        ("first #### 1\nthen #### 2.", "1", "2"),  # strict: the FIRST "#### N"
        ("no delimiter, the answer is 42.", None, "42"),
        ("so 1,000,000 dollars", None, "1000000"),
        ("#### none", None, None),
        ("nothing numeric", None, None),
        ("####  0.75", None, "0.75"),  # two spaces: strict-match does not accept them
        ("The answer is 18.\n#### 18\n", "18", "18"),
        ("5 - 3 = 2 so #### 2 left of 7", "2", "7"),
    ],
)
def test_extraction_follows_lm_eval(text, strict, flexible):
    assert extract_answer(text) == (strict, flexible)


def test_matching_is_lm_evals_normalised_exact_match():
    assert normalize("$1,234.") == "1234"
    assert answers_match("1,234", "1234") and answers_match("$42", "42")
    assert not answers_match("12.50", "12.5")  # exact match of text, as in lm-eval
    assert not answers_match(None, "3") and not answers_match("31", "3")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps\n#### 42", "42"),
        ("steps\n#### 1,234\n\n", "1234"),
        ("#### -3.5", "-3.5"),
        ("#### 1,234.5 dollars", None),  # the last line must be exactly "#### N"
        ("a\n#### 3\nmore", None),
        ("no answer here", None),
        ("", None),
    ],
)
def test_final_line_answer_holds_training_data_to_the_format(text, expected):
    assert final_line_answer(text) == expected


def test_gold_answer_from_meta_or_delimiter():
    ex = ChatExample((Message("user", "q"), Message("assistant", "work\n#### 1,024")), {})
    assert gold_answer(ex) == "1024"
    ex = ChatExample((Message("user", "q"), Message("assistant", "no")), {"answer": "-7"})
    assert gold_answer(ex) == "-7"
    with pytest.raises(ValueError, match="no gold"):
        gold_answer(ChatExample((Message("user", "q"), Message("assistant", "none")), {}))
