"""S_math: arithmetic word problems with step-by-step traces ending "#### N" (GSM8K stand-in),
the held-out test problems, and the pre-training-only question types."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

from llm.chat import ChatExample
from llm.synthetic.words import FIRST_NAMES, chat, check_n, rng_for

__all__ = ["MATH_TASKS", "PRETRAINING_MATH_TASKS", "arithmetic", "held_out_arithmetic"]


def _math_hourly(rng: random.Random) -> tuple[str, list[str], int]:
    name, rate, hours = rng.choice(FIRST_NAMES), rng.randint(8, 30), rng.randint(2, 9)
    q = (
        f"{name} earns ${rate} an hour. Yesterday {name} worked {hours} hours. "
        f"How much did {name} earn?"
    )
    steps = [
        f"{name} earns ${rate} for each hour worked.",
        f"For {hours} hours the earnings are {rate} x {hours} = {rate * hours}.",
    ]
    return q, steps, rate * hours


def _math_shopping(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    item_a, item_b = rng.sample(["apples", "pencils", "notebooks", "lemons", "candles"], 2)
    qa, pa, qb, pb = rng.randint(2, 9), rng.randint(1, 6), rng.randint(2, 9), rng.randint(1, 6)
    q = (
        f"{name} buys {qa} {item_a} at ${pa} each and {qb} {item_b} at ${pb} each. "
        f"How much does {name} spend in total?"
    )
    steps = [
        f"The {item_a} cost {qa} x {pa} = {qa * pa}.",
        f"The {item_b} cost {qb} x {pb} = {qb * pb}.",
        f"Together that is {qa * pa} + {qb * pb} = {qa * pa + qb * pb}.",
    ]
    return q, steps, qa * pa + qb * pb


def _math_sharing(rng: random.Random) -> tuple[str, list[str], int]:
    name, friends = rng.choice(FIRST_NAMES), rng.randint(2, 8)
    each = rng.randint(2, 12)
    total = friends * each
    thing = rng.choice(["cookies", "stickers", "marbles", "cards"])
    q = (
        f"{name} has {total} {thing} and shares them equally among {friends} friends. "
        f"How many {thing} does each friend get?"
    )
    steps = [
        f"There are {total} {thing} to share among {friends} friends.",
        f"Each friend gets {total} / {friends} = {each}.",
    ]
    return q, steps, each


def _math_remaining(rng: random.Random) -> tuple[str, list[str], int]:
    name = rng.choice(FIRST_NAMES)
    start = rng.randint(30, 120)
    used_a, used_b = rng.randint(1, start // 3), rng.randint(1, start // 3)
    q = (
        f"{name} had {start} pages to read. On Monday {name} read {used_a} pages and on "
        f"Tuesday {used_b} pages. How many pages are left?"
    )
    read = used_a + used_b
    steps = [
        f"Pages read so far: {used_a} + {used_b} = {read}.",
        f"Pages left: {start} - {read} = {start - read}.",
    ]
    return q, steps, start - read


def _math_two_step(rng: random.Random) -> tuple[str, list[str], int]:
    name, boxes, per_box = rng.choice(FIRST_NAMES), rng.randint(3, 9), rng.randint(4, 12)
    broken = rng.randint(1, boxes * per_box // 4)
    q = (
        f"{name} packs {boxes} boxes with {per_box} cups in each box. {broken} cups break. "
        f"How many cups are still whole?"
    )
    total = boxes * per_box
    steps = [
        f"Total cups: {boxes} x {per_box} = {total}.",
        f"Whole cups: {total} - {broken} = {total - broken}.",
    ]
    return q, steps, total - broken


MATH_TASKS = {
    "hourly": _math_hourly,
    "shopping": _math_shopping,
    "sharing": _math_sharing,
    "remaining": _math_remaining,
    "two_step": _math_two_step,
}


def _math_distance(rng: random.Random) -> tuple[str, list[str], int]:
    name, speed, hours = rng.choice(FIRST_NAMES), rng.randint(20, 70), rng.randint(2, 6)
    q = f"{name} drives at {speed} miles per hour for {hours} hours. How far does {name} drive?"
    steps = [
        f"{name} covers {speed} miles in each hour.",
        f"In {hours} hours that is {speed} x {hours} = {speed * hours}.",
    ]
    return q, steps, speed * hours


def _math_savings(rng: random.Random) -> tuple[str, list[str], int]:
    name, start, weekly, weeks = (
        rng.choice(FIRST_NAMES),
        rng.randint(5, 60),
        rng.randint(3, 15),
        rng.randint(2, 8),
    )
    q = (
        f"{name} has ${start} saved and adds ${weekly} every week. "
        f"How much has {name} saved after {weeks} weeks?"
    )
    added = weekly * weeks
    steps = [
        f"Over {weeks} weeks {name} adds {weekly} x {weeks} = {added}.",
        f"The savings are {start} + {added} = {start + added}.",
    ]
    return q, steps, start + added


def _math_ages(rng: random.Random) -> tuple[str, list[str], int]:
    older, younger = rng.sample(FIRST_NAMES, 2)
    age, years = rng.randint(14, 40), rng.randint(2, 10)
    gap = rng.randint(2, 12)  # < age, so the younger one's age is positive
    q = (
        f"{older} is {age} years old and {gap} years older than {younger}. "
        f"How old will {younger} be in {years} years?"
    )
    now = age - gap
    steps = [
        f"{younger} is {age} - {gap} = {now} years old now.",
        f"In {years} years {younger} will be {now} + {years} = {now + years}.",
    ]
    return q, steps, now + years


# Other question types, same solution format: the default models' pre-training chats use these
# (llm.default_models.pretraining_chats), so a base model knows the format of a worked solution
# but S_math still has its own problems to teach.
PRETRAINING_MATH_TASKS = {
    "distance": _math_distance,
    "savings": _math_savings,
    "ages": _math_ages,
}


def arithmetic(
    n: int, seed: int = 0, tasks: Mapping[str, Callable] = MATH_TASKS
) -> list[ChatExample]:
    """``n`` word problems answered step by step, ending in a line ``#### N`` (stand-in for
    the GPT-4o-rewritten GSM8K of App. E.2), cycling through ``tasks`` (name -> generator of
    ``(question, steps, answer)``). ``meta["answer"]`` is N as a string."""
    check_n(n)
    if not tasks:
        raise ValueError("tasks must name at least one problem generator")
    rng = rng_for("math", seed)
    names = list(tasks)
    out = []
    for i in range(n):
        task = names[i % len(names)]
        question, steps, answer = tasks[task](rng)
        body = "\n".join(f"{k}. {s}" for k, s in enumerate(steps, start=1))
        response = (
            f"Let's solve this step by step.\n{body}\nSo the answer is {answer}.\n#### {answer}"
        )
        out.append(chat(question, response, task=task, answer=str(answer), id=f"math-{seed}-{i}"))
    return out


def held_out_arithmetic(n: int, seed: int, train: Sequence[ChatExample]) -> list[ChatExample]:
    """``n`` arithmetic problems from separate seed streams, none of whose questions is in
    ``train`` (the held-out ``math_test`` set)."""
    check_n(n)
    seen = {ex.messages[0].content for ex in train}
    out: list[ChatExample] = []
    batch = 0
    while len(out) < n:
        batch += 1
        for ex in arithmetic(2 * n, seed=seed * 1_000 + 1_000_003 * batch):
            question = ex.messages[0].content
            if question not in seen and len(out) < n:
                seen.add(question)
                out.append(
                    ChatExample(ex.messages, {**ex.meta, "id": f"math-test-{seed}-{len(out)}"})
                )
        if batch > 100:
            raise RuntimeError("could not draw enough distinct held-out arithmetic problems")
    return out
