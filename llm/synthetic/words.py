"""Word banks and tiny helpers shared by every synthetic generator.

The word lists are invented or generic (no real people, places or titles). :func:`rng_for` is
the one source of randomness: ``random.Random(f"{name}:{seed}")`` per generator.
"""

from __future__ import annotations

import random

from llm.chat import ChatExample, Message

__all__ = [
    "NOUNS",
    "ADJECTIVES",
    "VERBS",
    "PLACES",
    "FIRST_NAMES",
    "LAST_SYLLABLES_A",
    "LAST_SYLLABLES_B",
    "CITIES",
    "GENRES",
    "PROFESSIONS",
    "TITLE_WORDS_A",
    "TITLE_WORDS_B",
    "AWARDS",
    "MONTHS",
    "rng_for",
    "check_n",
    "chat",
    "random_sentence",
]


def rng_for(name: str, seed: int) -> random.Random:
    """The random stream of generator ``name`` for ``seed``."""
    return random.Random(f"{name}:{seed}")


def check_n(n: int, name: str = "n") -> None:
    """Raise ValueError unless ``n`` is a non-negative int."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be a non-negative int, got {n!r}")


def chat(user: str, assistant: str, **meta) -> ChatExample:
    """A single-turn chat: one user message, one assistant answer, and ``meta``."""
    return ChatExample((Message("user", user), Message("assistant", assistant)), meta)


# ---------------------------------------------------------------------------------------------
# Word lists (invented or generic; no real people, places or titles)

NOUNS = (
    "river lantern garden window mountain letter bridge forest harbor engine violin market "
    "teacher farmer painter sailor doctor student baker village island library museum kitchen "
    "meadow orchard castle tower valley desert cloud storm candle basket ladder mirror clock "
    "bicycle train ship road map compass notebook pencil chair table apple orange lemon bread "
    "cheese coffee tea song story poem puzzle robot planet star moon"
).split()
ADJECTIVES = (
    "quiet bright old young small large green blue red golden silver gentle busy calm "
    "curious careful happy tired ancient modern simple strange famous hidden warm cold"
).split()
VERBS = (
    "finds carries paints builds opens watches follows visits repairs describes remembers "
    "collects measures explores cleans answers counts draws sells borrows"
).split()
PLACES = "near the river|in the village|on the hill|at the market|by the sea|in the library".split(
    "|"
)
FIRST_NAMES = (
    "Aldric Brisa Corvin Dalia Elowen Faris Galen Hesper Ilara Joren Kestrel Liora Maelis "
    "Nerin Orsolya Pell Quenna Rafe Sorrel Talin Ulric Vesna Wren Xanthe Yorick Zelda Amara "
    "Bastian Cerys Dorian Esme Fennick Giselle Hadrian Isolde Jasper"
).split()
LAST_SYLLABLES_A = "Mor Vel Thal Bren Cas Dun Esk Fal Gor Hal Ith Jor Kal Lun Mar Nor".split()
LAST_SYLLABLES_B = "ravin dell wick moor ston vane brook holt mere ford ley crest wynn".split()
CITIES = (
    "Valdoria Port Emberly Quillhaven Marisport Thornvale Lake Osterin Bellmoor Corvanne "
    "Duskfield Elmstead Fairhollow Glimmerton Harrowgate Ivybridge Juniper Bay Kestrelwick"
).split(" ")
GENRES = (
    "historical fiction|science fiction|mystery|fantasy|poetry|literary fiction|"
    "children's literature|romance|travel writing|biography"
).split("|")
PROFESSIONS = (
    "carpenter|astronomer|nurse|librarian|fisherman|architect|pharmacist|tailor|"
    "cartographer|glassblower|schoolteacher|beekeeper"
).split("|")
TITLE_WORDS_A = "Silent Crimson Hollow Distant Broken Glass Winter Paper Amber Last Salt".split()
TITLE_WORDS_B = "Harbor Orchard Lantern Compass Tide Garden Atlas Meridian Kingdom Letters".split()
AWARDS = (
    "Golden Quill Prize|Silver Lantern Award|Meridian Book Medal|Northwind Fiction Prize|"
    "Emberly Literary Award|Harborlight Prize for Poetry"
).split("|")
MONTHS = (
    "January February March April May June July August September October November December"
).split()


def random_sentence(rng: random.Random) -> str:
    """One short generic sentence drawn from the word banks."""
    return (
        f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the "
        f"{rng.choice(NOUNS)} {rng.choice(PLACES)}."
    )
