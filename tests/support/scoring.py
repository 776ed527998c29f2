"""Tables and a registry for the `textclf score` tests (tests/unit/test_score*.py)."""

from __future__ import annotations

import random
from pathlib import Path

from tasks.lib.config import Params
from tasks.lib.storage.registry import Registry

# Small windows and row groups, so that a few hundred rows make several of each.
SMALL = {"score": {"window": 16, "row_group_rows": 64, "threads": 1}}
WORDS = ["the", "film", "was", "a", "quiet", "and", "warm", "story", "about", "people", "who", "rarely", "say",
         "what", "they", "mean,", "badly"]  # fmt: skip


def sentences(count: int, seed: int = 3) -> list[str]:
    """Texts of 1 to 60 words, so that windows hold texts of very different lengths."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def register(params: Params, folder: Path) -> str:
    """`folder` registered in params' registry as its production version; returns the version."""
    registry = Registry(params.path("registry"))
    version = registry.register(folder, {"model_md5": folder.name})
    registry.set_production(version, "test")
    return version
