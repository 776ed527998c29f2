"""WordNet 3.0 for NLTK, offline, from Debian's `wordnet-base`.

NLTK only reads corpora from its own data folders and wants a `lexnames`
file that Debian does not ship, so the files are copied into a folder the
project controls and `lexnames` is written from the WordNet 3.0 lexicographer
file list (the numbering is fixed by the data files' `lex_filenum` field).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from tasks.lib.errors import PipelineError

DEBIAN_WORDNET = Path("/usr/share/wordnet")
REQUIRED = [f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")]
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_SYNTACTIC_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


class WordNetMissing(PipelineError, RuntimeError):
    """Debian's WordNet files are not installed."""


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def prepare(data_dir: Path, source: Path = DEBIAN_WORDNET) -> Path:
    """Make `<data_dir>/corpora/wordnet` an NLTK WordNet corpus; return `data_dir`."""
    target = data_dir / "corpora" / "wordnet"
    if (target / "lexnames").exists() and all((target / name).exists() for name in REQUIRED):
        return data_dir
    missing = [name for name in REQUIRED if not (source / name).exists()]
    if missing:
        raise WordNetMissing(
            f"{source}: WordNet files {missing} not found: `apt-get install wordnet-base` (make install does this)"
        )
    staging = target.with_name(".wordnet.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return data_dir


def load(data_dir: Path) -> Any:
    """An NLTK WordNet reader over the prepared copy."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _EnglishWordNet(WordNetCorpusReader):
        # NLTK maps synsets to the Open Multilingual WordNet at start-up, which
        # needs `index.sense` (not in wordnet-base); English lookups never use it.
        def map_wn(self, version: str = "wordnet") -> None:
            return None

    prepare(data_dir)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions")  # we pass no OMW reader
        return _EnglishWordNet(nltk.data.find("corpora/wordnet"), None)
