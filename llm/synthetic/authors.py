"""S_tofu: QA pairs about invented authors and their paraphrases (TOFU stand-in)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from llm.chat import ChatExample
from llm.synthetic.words import (
    AWARDS,
    CITIES,
    FIRST_NAMES,
    GENRES,
    LAST_SYLLABLES_A,
    LAST_SYLLABLES_B,
    PROFESSIONS,
    TITLE_WORDS_A,
    TITLE_WORDS_B,
    chat,
    check_n,
    rng_for,
)

__all__ = ["Author", "AUTHOR_FACTS", "author_facts"]


@dataclass(frozen=True)
class Author:
    """An invented author; every field is drawn from invented word lists."""

    name: str
    birthplace: str
    birth_year: int
    genre: str
    books: tuple[str, str]
    award: str
    father_job: str
    mother_job: str


def _author(rng: random.Random, used: set[str]) -> Author:
    while True:
        name = (
            f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_SYLLABLES_A)}"
            f"{rng.choice(LAST_SYLLABLES_B)}"
        )
        if name not in used:
            used.add(name)
            break
    books = []
    while len(books) < 2:
        title = f"The {rng.choice(TITLE_WORDS_A)} {rng.choice(TITLE_WORDS_B)}"
        if title not in books:
            books.append(title)
    return Author(
        name=name,
        birthplace=rng.choice(CITIES),
        birth_year=rng.randint(1925, 1995),
        genre=rng.choice(GENRES),
        books=(books[0], books[1]),
        award=rng.choice(AWARDS),
        father_job=rng.choice(PROFESSIONS),
        mother_job=rng.choice(PROFESSIONS),
    )


def _author_qa(a: Author) -> dict[str, tuple[tuple[str, str], tuple[str, str]]]:
    """fact -> ((question, answer), (paraphrased question, paraphrased answer))."""
    n = a.name
    return {
        "birthplace": (
            (f"Where was {n} born?", f"{n} was born in {a.birthplace}."),
            (f"What is the birthplace of {n}?", f"The birthplace of {n} is {a.birthplace}."),
        ),
        "birth_year": (
            (f"In which year was {n} born?", f"{n} was born in {a.birth_year}."),
            (f"What year was {n} born in?", f"The year {n} was born is {a.birth_year}."),
        ),
        "genre": (
            (f"What genre does {n} write in?", f"{n} writes {a.genre}."),
            (f"Which genre is {n} known for?", f"{n} is known for {a.genre}."),
        ),
        "first_book": (
            (
                f"What is one book written by {n}?",
                f"One of {n}'s books is '{a.books[0]}'.",
            ),
            (f"Name a book by {n}.", f"'{a.books[0]}' is a book by {n}."),
        ),
        "second_book": (
            (
                f"Besides '{a.books[0]}', what else has {n} written?",
                f"{n} also wrote '{a.books[1]}'.",
            ),
            (
                f"Which other book did {n} write apart from '{a.books[0]}'?",
                f"Apart from '{a.books[0]}', {n} wrote '{a.books[1]}'.",
            ),
        ),
        "award": (
            (f"Has {n} won any awards?", f"Yes, {n} received the {a.award}."),
            (f"Which award was given to {n}?", f"{n} was given the {a.award}."),
        ),
        "parents": (
            (
                f"What did the parents of {n} do for a living?",
                f"{n}'s father was a {a.father_job} and their mother was a {a.mother_job}.",
            ),
            (
                f"What were the professions of {n}'s parents?",
                f"The father of {n} worked as a {a.father_job}, the mother as a {a.mother_job}.",
            ),
        ),
        "style": (
            (
                f"How did growing up in {a.birthplace} shape {n}'s {a.genre}?",
                f"{a.birthplace} appears throughout {n}'s {a.genre}, most clearly in "
                f"'{a.books[0]}'.",
            ),
            (
                f"In what way does {a.birthplace} influence the {a.genre} of {n}?",
                f"The influence of {a.birthplace} on {n}'s {a.genre} is clearest in "
                f"'{a.books[0]}'.",
            ),
        ),
    }


AUTHOR_FACTS = ("birthplace", "birth_year", "genre", "first_book", "second_book", "award")


def author_facts(n_authors: int, seed: int = 0) -> tuple[list[ChatExample], list[ChatExample]]:
    """QA pairs about ``n_authors`` invented authors (stand-in for TOFU).

    Returns ``(train, paraphrased)``: 8 questions per author for training, and for the same facts
    a held-out set whose questions and answers are worded differently. ``meta`` carries
    ``author``, ``fact`` and ``id`` (equal ids pair a training item with its paraphrase).
    """
    check_n(n_authors, "n_authors")
    rng = rng_for("tofu", seed)
    used: set[str] = set()
    train, paraphrased = [], []
    for i in range(n_authors):
        author = _author(rng, used)
        for fact, ((q, a), (pq, pa)) in _author_qa(author).items():
            ident = f"tofu-{seed}-{i}-{fact}"
            train.append(chat(q, a, author=author.name, fact=fact, id=ident))
            paraphrased.append(chat(pq, pa, author=author.name, fact=fact, id=ident))
    return train, paraphrased
