"""S_inst: single-turn instructions with exactly computed answers (Instruct-SkillMix stand-in)."""

from __future__ import annotations

import random
from datetime import date, timedelta

from llm.chat import ChatExample
from llm.synthetic.words import ADJECTIVES, MONTHS, NOUNS, chat, check_n, random_sentence, rng_for

__all__ = ["INSTRUCTION_TASKS", "instruction_following"]


def _inst_reverse_list(rng: random.Random) -> tuple[str, str]:
    items = rng.sample(NOUNS, rng.randint(3, 6))
    prompt = rng.choice(
        [
            "Reverse the order of this list: {}.",
            "Write the following items in reverse order: {}.",
            "List these words from last to first: {}.",
        ]
    ).format(", ".join(items))
    return prompt, "Here is the list in reverse order: " + ", ".join(reversed(items)) + "."


def _inst_uppercase(rng: random.Random) -> tuple[str, str]:
    words = " ".join(rng.sample(ADJECTIVES + NOUNS, rng.randint(2, 5)))
    prompt = rng.choice(
        [
            'Convert this text to uppercase: "{}"',
            'Rewrite "{}" using only capital letters.',
            'Make every letter in "{}" uppercase.',
        ]
    ).format(words)
    return prompt, f'The uppercase version is "{words.upper()}".'


def _inst_count_words(rng: random.Random) -> tuple[str, str]:
    sentence = random_sentence(rng)
    n = len(sentence.rstrip(".").split())
    prompt = rng.choice(
        [
            'How many words are in this sentence? "{}"',
            'Count the words in: "{}"',
            'Tell me the number of words in the sentence "{}"',
        ]
    ).format(sentence)
    return prompt, f"The sentence has {n} words."


def _inst_sort_numbers(rng: random.Random) -> tuple[str, str]:
    numbers = [rng.randint(1, 99) for _ in range(rng.randint(4, 7))]
    descending = rng.random() < 0.3
    order = "largest to smallest" if descending else "smallest to largest"
    prompt = rng.choice(
        ["Sort these numbers from {o}: {n}.", "Arrange {n} from {o}.", "Order from {o}: {n}."]
    ).format(o=order, n=", ".join(map(str, numbers)))
    ordered = sorted(numbers, reverse=descending)
    return prompt, f"Sorted from {order}: " + ", ".join(map(str, ordered)) + "."


def _inst_format_date(rng: random.Random) -> tuple[str, str]:
    day = date(1990, 1, 1) + timedelta(days=rng.randint(0, 365 * 40))
    iso = day.isoformat()
    long_form = f"{MONTHS[day.month - 1]} {day.day}, {day.year}"
    if rng.random() < 0.5:
        prompt = rng.choice(
            ["Write the date {} in words.", "Format {} as month day, year.", "Spell out {}."]
        ).format(iso)
        return prompt, f"{iso} is {long_form}."
    prompt = rng.choice(
        ["Write {} in YYYY-MM-DD format.", "Convert {} to ISO format.", "Give {} as YYYY-MM-DD."]
    ).format(long_form)
    return prompt, f"{long_form} in ISO format is {iso}."


def _inst_sum_numbers(rng: random.Random) -> tuple[str, str]:
    numbers = [rng.randint(1, 50) for _ in range(rng.randint(2, 5))]
    prompt = rng.choice(
        ["What is the sum of {}?", "Add up these numbers: {}.", "Compute the total of {}."]
    ).format(", ".join(map(str, numbers)))
    return prompt, f"{' + '.join(map(str, numbers))} = {sum(numbers)}."


def _inst_first_letters(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(NOUNS, rng.randint(3, 6))
    prompt = rng.choice(
        [
            "Give the first letter of each word: {}.",
            "Write down the initial letter of every word in: {}.",
        ]
    ).format(", ".join(words))
    return prompt, "The first letters are " + ", ".join(w[0] for w in words) + "."


def _inst_rhyme_free_title(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(ADJECTIVES + NOUNS, rng.randint(2, 4))
    phrase = " ".join(words)
    prompt = rng.choice(
        ['Capitalize each word of "{}".', 'Write "{}" in title case.', 'Title-case "{}".']
    ).format(phrase)
    return prompt, f'In title case: "{" ".join(w.capitalize() for w in words)}".'


INSTRUCTION_TASKS = {
    "reverse_list": _inst_reverse_list,
    "uppercase": _inst_uppercase,
    "count_words": _inst_count_words,
    "sort_numbers": _inst_sort_numbers,
    "format_date": _inst_format_date,
    "sum_numbers": _inst_sum_numbers,
    "first_letters": _inst_first_letters,
    "title_case": _inst_rhyme_free_title,
}


def instruction_following(n: int, seed: int = 0) -> list[ChatExample]:
    """``n`` single-turn instructions with exactly computed answers (stand-in for S_inst).

    Task families cycle through :data:`INSTRUCTION_TASKS` (``meta["task"]``), so every family is
    represented once ``n >= 8``.
    """
    check_n(n)
    rng = rng_for("inst", seed)
    names = list(INSTRUCTION_TASKS)
    out = []
    for i in range(n):
        task = names[i % len(names)]
        prompt, answer = INSTRUCTION_TASKS[task](rng)
        out.append(chat(prompt, answer, task=task, id=f"inst-{seed}-{i}"))
    return out
