"""S_math: one-operation word problems with step-by-step traces ending "#### N" (GSM8K
stand-in), the held-out test problems, and the pre-training-only question types.

Each problem asks for one sum, difference or product of small numbers, and its worked solution
first restates the question's fact sentence, then computes: a model of a million parameters can
learn to read such a problem through the paper's GSM8K prompt (0.5-0.7 accuracy on every path;
the eighth round of docs/choosing_the_toy.md), where the earlier two- and three-step problems
with numbers up to 120 stayed at 0.00-0.03.

Every question falls in one of two fixed splits by a hash of its text (:func:`question_split`):
the training problems (the S_math stage, the default models' pre-training) are drawn from the
``"train"`` split, the held-out ones from ``"test"``, so no seed can put a test question into
training. The problem space is small (a few thousand products), which is why a split by seed
alone would not do.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping, Sequence

from llm.chat import ChatExample
from llm.synthetic.words import FIRST_NAMES, chat, check_n, rng_for

__all__ = [
    "MATH_TASKS",
    "PRETRAINING_MATH_TASKS",
    "arithmetic",
    "held_out_arithmetic",
    "question_split",
]

THINGS = ("apples", "pencils", "stickers", "marbles", "cards", "cookies", "shells", "stamps")
TEST_SHARE = 8  # one question in TEST_SHARE is in the test split

Problem = tuple[str, list[str], int]  # question, solution steps, answer


def _restated(question: str, operation: str, answer: int) -> Problem:
    """The solution steps: the question's fact sentence(s) copied, then ``operation``."""
    facts = question[: question.rfind(". ") + 1]
    return question, [facts, operation], answer


def _math_add(rng: random.Random) -> Problem:
    name, thing = rng.choice(FIRST_NAMES), rng.choice(THINGS)
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    q = f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
    return _restated(q, f"{a} + {b} = {a + b}.", a + b)


def _math_sub(rng: random.Random) -> Problem:
    name, thing = rng.choice(FIRST_NAMES), rng.choice(THINGS)
    given, left = rng.randint(1, 9), rng.randint(1, 9)
    q = f"{name} had {given + left} {thing} and gave away {given}. How many {thing} are left?"
    return _restated(q, f"{given + left} - {given} = {left}.", left)


def _math_mul(rng: random.Random) -> Problem:
    name, thing = rng.choice(FIRST_NAMES), rng.choice(THINGS)
    bags, each = rng.randint(2, 5), rng.randint(2, 5)
    q = (
        f"{name} buys {bags} bags with {each} {thing} in each bag. "
        f"How many {thing} does {name} buy?"
    )
    return _restated(q, f"{bags} x {each} = {bags * each}.", bags * each)


MATH_TASKS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _math_add,
    "sub": _math_sub,
    "mul": _math_mul,
}


def _math_walk(rng: random.Random) -> Problem:
    name, a, b = rng.choice(FIRST_NAMES), rng.randint(1, 9), rng.randint(1, 9)
    q = (
        f"{name} walked {a} miles on Monday and {b} on Tuesday. "
        f"How many miles did {name} walk in all?"
    )
    return _restated(q, f"{a} + {b} = {a + b}.", a + b)


def _math_pages(rng: random.Random) -> Problem:
    name, read, left = rng.choice(FIRST_NAMES), rng.randint(1, 9), rng.randint(1, 9)
    q = (
        f"A book has {read + left} pages. {name} has read {read} pages. "
        "How many pages are still to read?"
    )
    return _restated(q, f"{read + left} - {read} = {left}.", left)


def _math_saves(rng: random.Random) -> Problem:
    name, amount, weeks = rng.choice(FIRST_NAMES), rng.randint(2, 5), rng.randint(2, 5)
    q = (
        f"{name} saves {amount} dollars every week for {weeks} weeks. "
        f"How many dollars does {name} save?"
    )
    return _restated(q, f"{amount} x {weeks} = {amount * weeks}.", amount * weeks)


# Other question types, same operations and solution format: the default models' pre-training
# uses these beside other instances of S_math's types (llm.default_models.pretraining_documents),
# as the paper's base models could already solve grade-school problems before S_math.
PRETRAINING_MATH_TASKS: dict[str, Callable[[random.Random], Problem]] = {
    "walk": _math_walk,
    "pages": _math_pages,
    "saves": _math_saves,
}


def question_split(question: str) -> str:
    """``"test"`` for one question text in :data:`TEST_SHARE` (by CRC-32, the same in every
    process), else ``"train"``."""
    return "test" if zlib.crc32(question.encode("utf-8")) % TEST_SHARE == 0 else "train"


def arithmetic(
    n: int,
    seed: int = 0,
    tasks: Mapping[str, Callable[[random.Random], Problem]] = MATH_TASKS,
    split: str = "train",
) -> list[ChatExample]:
    """``n`` word problems of ``split`` (:func:`question_split`) answered step by step, ending
    in a line ``#### N`` (stand-in for the GPT-4o-rewritten GSM8K of App. E.2), cycling through
    ``tasks`` (name -> generator of ``(question, steps, answer)``). ``meta["answer"]`` is N as a
    string."""
    check_n(n)
    if not tasks:
        raise ValueError("tasks must name at least one problem generator")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = rng_for("math", seed)
    names = list(tasks)
    out = []
    for i in range(n):
        task = names[i % len(names)]
        question, steps, answer = tasks[task](rng)
        while question_split(question) != split:
            question, steps, answer = tasks[task](rng)
        body = "\n".join(f"{k}. {s}" for k, s in enumerate(steps, start=1))
        response = (
            f"Let's solve this step by step.\n{body}\nSo the answer is {answer}.\n#### {answer}"
        )
        out.append(chat(question, response, task=task, answer=str(answer), id=f"math-{seed}-{i}"))
    return out


def held_out_arithmetic(n: int, seed: int, train: Sequence[ChatExample]) -> list[ChatExample]:
    """``n`` distinct arithmetic problems of the test split from separate seed streams, none of
    whose questions is in ``train`` (the held-out ``math_test`` set)."""
    check_n(n)
    seen = {ex.messages[0].content for ex in train}
    out: list[ChatExample] = []
    batch = 0
    while len(out) < n:
        batch += 1
        for ex in arithmetic(2 * n, seed=seed * 1_000 + 1_000_003 * batch, split="test"):
            question = ex.messages[0].content
            if question not in seen and len(out) < n:
                seen.add(question)
                out.append(
                    ChatExample(ex.messages, {**ex.meta, "id": f"math-test-{seed}-{len(out)}"})
                )
        if batch > 100:
            raise RuntimeError("could not draw enough distinct held-out arithmetic problems")
    return out
