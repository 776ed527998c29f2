"""A seeded generator of tagged news sentences: the offline demo source of token classification.

Sentences follow news-wire shapes (announcements, results, arrests, market moves) with people,
organisations, places and miscellaneous names (events, nationalities) in IOB2. Some names are
one type in one sentence and another type in the next (`Jordan` the player and the country,
`Washington` the president and the city), and some sentences hold no entity, so a tagger has to
read the context, not a list of names.
"""

from __future__ import annotations

import random

import pandas as pd

TYPES = ("PER", "ORG", "LOC", "MISC")
NAMES: dict[str, list[str]] = {
    "PER": [
        "Anna Berg",
        "Tom Hale",
        "Ines Lund",
        "Omar Sy",
        "Lea Wu",
        "Michael Jordan",
        "George Washington",
        "Yuki Sato",
        "Carlos Ruiz",
        "Priya Nair",
        "Marta Nowak",
        "Kofi Mensah",
    ],
    "ORG": [
        "Acme Corp",
        "Nordbank",
        "Blue Line",
        "Vega Labs",
        "Reuters",
        "Siemens",
        "Bank of Oslo",
        "Kenya Airways",
        "FIFA",
        "Lima Motors",
    ],
    "LOC": [
        "Paris",
        "Oslo",
        "Lima",
        "Kyoto",
        "Accra",
        "Quito",
        "Jordan",
        "Washington",
        "New Delhi",
        "Cape Town",
    ],
    "MISC": ["Olympic", "Nobel", "World Cup", "Davos", "Euro 2000", "German", "French", "Grand Prix"],
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
# Slots: {PER} {ORG} {LOC} {MISC} (a name of that type), {DAY}, {NUM}.
SHAPES = [
    "{PER} , chief executive of {ORG} , said on {DAY} the company would open an office in {LOC} .",
    "{ORG} shares rose {NUM} percent in {LOC} after the {MISC} report .",
    "{PER} won the {MISC} title in {LOC} on {DAY} .",
    "Police in {LOC} said {PER} was arrested on {DAY} .",
    "The {MISC} delegation met {PER} of {ORG} in {LOC} .",
    "{LOC} beat {LOC} {NUM} - {NUM} in the {MISC} final on {DAY} .",
    "{PER} told reporters in {LOC} that talks with {ORG} would go on .",
    "{ORG} said on {DAY} it expected profit to fall by {NUM} percent .",
    "Prices were little changed on {DAY} as traders waited for new figures .",
    "Rain delayed play for {NUM} minutes on {DAY} .",
    "A spokesman for {ORG} declined to comment .",
    "{PER} , {NUM} , joined {ORG} from a rival in {LOC} .",
]


def _sentence(rng: random.Random, shape: str, types: set[str]) -> tuple[list[str], list[str]]:
    """One sentence of `shape` as (words, tags); entities of types outside `types` tagged O."""
    words: list[str] = []
    tags: list[str] = []
    for slot in shape.split(" "):
        if slot in ("{DAY}", "{NUM}"):
            words.append(rng.choice(DAYS) if slot == "{DAY}" else str(rng.randint(1, 99)))
            tags.append("O")
        elif slot.startswith("{"):
            kind = slot[1:-1]
            name = rng.choice(NAMES[kind]).split(" ")
            words += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1) if kind in types else ["O"] * len(name)
        else:
            words.append(slot)
            tags.append("O")
    return words, tags


def generate_sentences(rows: int, seed: int, types: list[str]) -> pd.DataFrame:
    """Generate `rows` distinct tagged sentences.

    Args:
        rows: number of sentences.
        seed: the same seed gives the same sentences.
        types: the entity types to tag (of TYPES; the others' names are tagged O).

    Returns:
        A frame with `text` (words joined by spaces) and `label` (IOB2 tags joined by spaces).
    """
    rng = random.Random(seed)
    wanted = set(types)
    seen: set[str] = set()
    records: list[dict[str, str]] = []
    for _ in range(rows * 100):
        if len(records) == rows:
            break
        words, tags = _sentence(rng, rng.choice(SHAPES), wanted)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            records.append({"text": text, "label": " ".join(tags)})
    else:
        raise ValueError(f"the demo sentences ran out of new combinations at {len(records)} of {rows} rows")
    return pd.DataFrame.from_records(records)
