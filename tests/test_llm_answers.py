"""The one GSM8K answer parser: generated solutions, gold answers, the training-data rule."""

from __future__ import annotations

import pytest

from llm.answers import answers_match, extract_answer, final_line_answer, gold_answer
from llm.chat import ChatExample, Message


@pytest.mark.parametrize(
    ("text", "strict", "flexible"),
    [
        ("3 + 4 = 7\n#### 7", 7.0, 7.0),
        ("total 1,234 apples\n#### 1,234", 1234.0, 1234.0),
        ("it costs $5 each\n#### $12.50", 12.5, 12.5),
        ("#### -3", -3.0, -3.0),
        ("#### $-4", -4.0, -4.0),
        ("first #### 1\nthen #### 2.", 2.0, 2.0),  # after the LAST ####
        ("no delimiter, the answer is 42.", None, 42.0),
        ("so 1,000,000 dollars", None, 1_000_000.0),
        ("#### none", None, None),
        ("nothing numeric", None, None),
        ("value .5\n####  0.75 ", 0.75, 0.75),
    ],
)
def test_extract_answer(text, strict, flexible):
    assert extract_answer(text) == (strict, flexible)


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
    assert gold_answer(ex) == 1024.0
    ex = ChatExample((Message("user", "q"), Message("assistant", "no")), {"answer": "-7"})
    assert gold_answer(ex) == -7.0
    with pytest.raises(ValueError, match="no gold"):
        gold_answer(ChatExample((Message("user", "q"), Message("assistant", "none")), {}))


def test_answers_match_tolerates_float_noise_only():
    assert answers_match(0.1 + 0.2, 0.3)
    assert not answers_match(3.01, 3.0)
    assert not answers_match(None, 3.0)
