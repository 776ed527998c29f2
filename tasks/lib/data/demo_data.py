"""A seeded generator of labelled English reviews: the offline default source.

The reviews mix domains, aspects, intensifiers, negation ("not great" is
negative, "never boring" positive) and contrast clauses ("although X, Y",
where the main clause decides), so a model has to learn more than a word
list. A share of labels is flipped on purpose, as real data has noise.
"""

from __future__ import annotations

import random

import pandas as pd

DOMAINS: dict[str, tuple[list[str], list[str]]] = {
    "movie": (
        ["film", "movie", "picture", "sequel", "documentary"],
        ["plot", "acting", "soundtrack", "dialogue", "pacing", "ending", "cast"],
    ),
    "restaurant": (
        ["restaurant", "bistro", "diner", "cafe", "place"],
        ["food", "service", "menu", "staff", "dessert", "atmosphere", "price"],
    ),
    "product": (
        ["phone", "laptop", "blender", "headset", "camera", "kettle"],
        ["battery", "screen", "build quality", "design", "price", "sound", "setup"],
    ),
    "hotel": (
        ["hotel", "resort", "hostel", "inn"],
        ["room", "staff", "breakfast", "location", "bed", "view", "check-in"],
    ),
    "book": (
        ["novel", "book", "memoir", "thriller"],
        ["story", "characters", "writing", "ending", "chapters", "prose"],
    ),
}
POSITIVE = [
    "excellent",
    "wonderful",
    "delightful",
    "superb",
    "charming",
    "brilliant",
    "lovely",
    "impressive",
    "fantastic",
    "enjoyable",
    "solid",
    "great",
    "pleasant",
    "gripping",
    "reliable",
    "friendly",
    "outstanding",
    "memorable",
]
NEGATIVE = [
    "awful",
    "terrible",
    "dull",
    "disappointing",
    "bland",
    "clumsy",
    "poor",
    "mediocre",
    "boring",
    "tedious",
    "flimsy",
    "rude",
    "forgettable",
    "messy",
    "overpriced",
    "sloppy",
    "frustrating",
    "annoying",
]
INTENSIFIERS = [
    "",
    "",
    "really ",
    "truly ",
    "absolutely ",
    "rather ",
    "quite ",
    "very ",
    "incredibly ",
    "surprisingly ",
]
OPENERS = ["", "", "Honestly, ", "Overall, ", "To be fair, ", "In short, ", "Frankly, ", "I have to say ", "Well, "]
POS_VERDICTS = [
    "I would recommend it.",
    "Worth every penny.",
    "I will be back.",
    "Five stars from me.",
    "I loved it.",
    "Highly recommended.",
    "It made my week.",
    "I would happily go again.",
]
NEG_VERDICTS = [
    "I would not recommend it.",
    "A waste of money.",
    "Never again.",
    "One star, sadly.",
    "I regret it.",
    "Avoid it.",
    "It ruined my evening.",
    "I want my money back.",
]


def _adjective(rng: random.Random, positive: bool) -> str:
    return rng.choice(POSITIVE if positive else NEGATIVE)


def _clause(rng: random.Random, aspect: str, positive: bool) -> str:
    """A clause about one aspect; half the time the sentiment comes via negation."""
    if rng.random() < 0.3:
        # "not awful" reads mildly positive, "not great" negative.
        word = _adjective(rng, not positive)
        return f"the {aspect} was not {word}" if rng.random() < 0.7 else f"the {aspect} was never {word}"
    return f"the {aspect} was {rng.choice(INTENSIFIERS)}{_adjective(rng, positive)}"


def _review(rng: random.Random, positive: bool) -> str:
    domain = rng.choice(list(DOMAINS))
    items, aspects = DOMAINS[domain]
    item = rng.choice(items)
    first, second = rng.sample(aspects, 2)
    shape = rng.randrange(5)
    if shape == 0:
        text = f"{rng.choice(OPENERS)}this {item} was {rng.choice(INTENSIFIERS)}{_adjective(rng, positive)}."
    elif shape == 1:
        text = f"{_clause(rng, first, positive)} and {_clause(rng, second, positive)}."
    elif shape == 2:
        # The main clause carries the label; the concession says the opposite.
        text = f"Although {_clause(rng, first, not positive)}, {_clause(rng, second, positive)}."
    elif shape == 3:
        verdict = rng.choice(POS_VERDICTS if positive else NEG_VERDICTS)
        text = f"{rng.choice(OPENERS)}{_clause(rng, first, positive)}. {verdict}"
    else:
        verdict = rng.choice(POS_VERDICTS if positive else NEG_VERDICTS)
        text = f"We tried the {item}: {_clause(rng, first, positive)}, {_clause(rng, second, positive)}. {verdict}"
    return text[0].upper() + text[1:]


def generate_reviews(rows: int, label_noise: float, seed: int, labels: tuple[str, str]) -> pd.DataFrame:
    """Generate `rows` distinct labelled reviews, balanced between the two labels.

    Args:
        rows: number of reviews.
        label_noise: share of rows whose label is flipped.
        seed: the same seed gives the same reviews.
        labels: (negative label, positive label) as they should appear in the data.

    Returns:
        A frame with `text` and `label` columns.
    """
    rng = random.Random(seed)
    seen: set[str] = set()
    records: list[dict[str, str]] = []
    while len(records) < rows:
        positive = len(records) % 2 == 0
        text = _review(rng, positive)
        if text in seen:
            continue
        seen.add(text)
        if rng.random() < label_noise:
            positive = not positive
        records.append({"text": text, "label": labels[1] if positive else labels[0]})
    rng.shuffle(records)
    return pd.DataFrame.from_records(records)
