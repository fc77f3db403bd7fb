"""Pre-training text: short generic documents (stories, sums, lists, Q&A, letters), arithmetic
facts, and repeated phrases."""

from __future__ import annotations

import random

from llm.synthetic.words import (
    ADJECTIVES,
    CITIES,
    FIRST_NAMES,
    NOUNS,
    PLACES,
    VERBS,
    check_n,
    random_sentence,
    rng_for,
)

__all__ = ["arithmetic_facts", "generic_text", "repeated_phrases"]


def _doc_story(rng: random.Random) -> str:
    name = rng.choice(FIRST_NAMES)
    lines = [f"{name} lived {rng.choice(PLACES)}."]
    lines += [random_sentence(rng) for _ in range(rng.randint(2, 5))]
    lines.append(
        f"In the end, {name} {rng.choice(VERBS)} a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}."
    )
    return " ".join(lines)


def _doc_arithmetic(rng: random.Random) -> str:
    facts = []
    for _ in range(rng.randint(3, 6)):
        a, b = rng.randint(1, 60), rng.randint(1, 60)
        op = rng.choice(["plus", "minus", "times"])
        value = {"plus": a + b, "minus": a - b, "times": a * b}[op]
        facts.append(f"{a} {op} {b} equals {value}.")
    return " ".join(facts)


def _doc_list(rng: random.Random) -> str:
    kind = rng.choice(["Shopping list", "Things to pack", "Books to read", "Tasks for today"])
    items = rng.sample(NOUNS, rng.randint(3, 6))
    return f"{kind}:\n" + "\n".join(f"- {item}" for item in items)


def _doc_qa(rng: random.Random) -> str:
    noun = rng.choice(NOUNS)
    return (
        f"Question: What is a {noun}?\nAnswer: A {noun} is a {rng.choice(ADJECTIVES)} thing "
        f"that people find {rng.choice(PLACES)}."
    )


def _doc_letter(rng: random.Random) -> str:
    to, frm = rng.sample(FIRST_NAMES, 2)
    city = rng.choice(CITIES)
    return (
        f"Dear {to},\nI am writing from {city}. {random_sentence(rng)} {random_sentence(rng)}\n"
        f"Best wishes,\n{frm}"
    )


_DOC_KINDS = (_doc_story, _doc_arithmetic, _doc_list, _doc_qa, _doc_letter)


def generic_text(n: int, seed: int = 0) -> list[str]:
    """``n`` short generic documents (stories, sums, lists, letters) for pre-training."""
    check_n(n)
    rng = rng_for("generic", seed)
    return [rng.choice(_DOC_KINDS)(rng) for _ in range(n)]


def arithmetic_facts(n: int, seed: int = 0) -> list[str]:
    """``n`` documents of 4-8 facts each: sums and differences of numbers to 20, products to
    9 x 9, written as S_math's solutions write them (``7 + 5 = 12.``)."""
    check_n(n)
    rng = rng_for("arithmetic-facts", seed)
    docs = []
    for _ in range(n):
        facts = []
        for _ in range(rng.randint(4, 8)):
            a, b = rng.randint(1, 20), rng.randint(1, 20)
            x, y = rng.randint(2, 9), rng.randint(2, 9)
            facts.append(
                rng.choice(
                    [f"{a} + {b} = {a + b}.", f"{a + b} - {a} = {b}.", f"{x} x {y} = {x * y}."]
                )
            )
        docs.append(" ".join(facts))
    return docs


def repeated_phrases(n: int, seed: int = 0) -> list[str]:
    """``n`` documents that say a random phrase of 6-14 words twice. Copying is what a worked
    solution needs (its first step restates the question); a small model learns it from such
    text (induction) sooner than from the math chats alone (docs/choosing_the_toy.md, eighth
    round)."""
    check_n(n)
    rng = rng_for("repeated-phrases", seed)
    pool = [*NOUNS, *ADJECTIVES, *FIRST_NAMES, *(str(i) for i in range(1, 21))]
    docs = []
    for _ in range(n):
        phrase = " ".join(rng.choice(pool) for _ in range(rng.randint(6, 14)))
        docs.append(f"{phrase}. {phrase}.")
    return docs
