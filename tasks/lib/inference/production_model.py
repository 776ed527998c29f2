"""The production model, for prediction and serving: ONNX Runtime only, no torch.

`ProductionModel` follows the registry's production pointer: each call reads
the pointer (a few bytes) and loads a newly promoted version before answering,
so a long-running service picks up promotions without a restart. If the new
version cannot be loaded, it keeps answering with the version it has and says
why in `status()`. If it has none (a start, or a restart, while production's files
do not verify) and may fall back (`fall_back`: a service), it serves the rollback target
instead: the most recent previous production, not rolled back, that verifies and loads;
`status()` says "degraded" and names both (`fallback_for`), and production serves again
once it verifies or is replaced.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tasks.lib.artifacts import VERSION_FILE
from tasks.lib.data.sentences import tag_types
from tasks.lib.errors import PipelineError
from tasks.lib.evaluation.metrics import softmax
from tasks.lib.inference.onnx_classifier import OnnxClassifier
from tasks.lib.inference.onnx_tagger import Tagged, Tagger
from tasks.lib.storage.registry import Registry, RegistryError, verify_files

log = logging.getLogger(__name__)


class ModelLoadError(PipelineError, RuntimeError):
    """No production model, or its files cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "probabilities": self.probabilities}


# What serves: a text classifier, or a token classifier (its folder's classifier.json says which).
Served = OnnxClassifier | Tagger
# Its answer to one text: a label with probabilities, or the text's entities.
Reply = Prediction | Tagged


def predictions_from(labels: list[str], probabilities: np.ndarray) -> list[Prediction]:
    """A Prediction per row of `probabilities` (columns in the order of `labels`)."""
    return [
        Prediction(labels[int(row.argmax())], {label: round(float(p), 6) for label, p in zip(labels, row, strict=True)})
        for row in probabilities
    ]


def model_file(folder: Path) -> Path:
    """The ONNX graph of a registered version: the one its record names, else its only .onnx file."""
    record = folder / VERSION_FILE
    named = json.loads(record.read_text(encoding="utf-8")).get("model_file") if record.exists() else None
    if named:
        return folder / named
    graphs = sorted(folder.glob("*.onnx"))
    if len(graphs) != 1:
        raise ModelLoadError(f"{folder}: expected one .onnx model, found {[g.name for g in graphs]}")
    return graphs[0]


def variant_files(folder: Path) -> dict[str, str]:
    """The serving variants registered in a version (name -> file); older records: the one graph they have."""
    record = folder / VERSION_FILE
    data = json.loads(record.read_text(encoding="utf-8")) if record.exists() else {}
    return dict(data.get("serving_variants") or {}) or {str(data.get("variant") or "model"): model_file(folder).name}


# Texts of 4 to 49 words that time a variant on the serving host (any text will do: only speed is measured).
_WORDS = [
    "the",
    "film",
    "was",
    "a",
    "quiet",
    "and",
    "warm",
    "story",
    "about",
    "people",
    "who",
    "rarely",
    "say",
    "what",
    "they",
    "mean",
]
PROBE_TEXTS = [" ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(4 + 3 * i)) for i in range(16)]


@dataclass(frozen=True)
class VariantChoice:
    variant: str
    by: str  # "gate", "serve.variant" or "fastest on this host"
    timings_ms: dict[str, float]  # auto: median milliseconds of one batch of PROBE_TEXTS per variant


def replies(model: Served, texts: Sequence[str], batch_size: int = 32, cut: bool = False) -> list[Reply]:
    """`model`'s answer to each text (`cut`: a server's batch, see length_batches)."""
    if isinstance(model, Tagger):
        return list[Reply](model.tag(texts, batch_size, cut))
    return list(predictions_from(model.info.labels, softmax(model.logits(texts, batch_size, cut))))


def reply_record(text: str, version: str, reply: Reply) -> dict[str, Any]:
    """One text's answer as `textclf predict --json` prints it: the text, the version, and the
    prediction's label and probabilities or the text's entities (offsets in characters of `text`)."""
    if isinstance(reply, Prediction):
        return {"text": text, "version": version, **reply.as_dict()}
    return {"text": text, "entities": [entity.as_dict() for entity in reply.entities], "version": version}


def served_labels(model: Served) -> list[str]:
    """A classifier's labels, or a tagger's entity types."""
    return tag_types(model.info.labels) if isinstance(model, Tagger) else model.info.labels


def time_batch(model: Served, rounds: int = 5) -> float:
    """Median milliseconds of one inference over PROBE_TEXTS (a server's batch: length cuts on)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        replies(model, PROBE_TEXTS, len(PROBE_TEXTS), cut=True)
        times.append((time.perf_counter() - started) * 1000)
    return round(sorted(times)[len(times) // 2], 2)


def load_classifier(
    folder: Path, threads: int | None = None, verify: bool = True, graph_file: str | None = None
) -> OnnxClassifier:
    """Load a model folder, turning ONNX Runtime's and the tokenizer's errors into one that names the file.

    A registry version's files are first checked against the hashes its record lists (`verify`).
    `graph_file`: which graph of the folder (default: the one its record names).
    """
    if verify:
        try:
            verify_files(folder)
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from None
    graph = folder / graph_file if graph_file else model_file(folder)
    try:
        return OnnxClassifier(folder, graph.name, threads)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types (InvalidProtobuf, Fail, NoSuchFile), tokenizers others
        raise ModelLoadError(f"{graph}: cannot load the model ({type(exc).__name__}: {exc})") from None


def load_served(folder: Path, threads: int | None = None, verify: bool = True, graph_file: str | None = None) -> Served:
    """`load_classifier`, or for a token classifier's folder its tagger (same checks, same errors)."""
    classifier = load_classifier(folder, threads, verify, graph_file)
    if classifier.info.task != "token_classification":
        return classifier
    return Tagger(folder, classifier.engine)


def warmed_up(model: Served) -> Served:
    """`model` after one inference (ONNX Runtime's first run is slow: not on a request).

    Raises:
        ModelLoadError: the model loads but cannot run (e.g. its output does not match its labels).
    """
    try:
        replies(model, ["warm up"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own types; any of them means "cannot serve"
        raise ModelLoadError(f"{model.folder}: the model loads but cannot run ({type(exc).__name__}: {exc})") from None
    return model


def load_variant(
    folder: Path, variant: str = "gate", threads: int | None = None, setting: str = "serve.variant"
) -> tuple[Served, VariantChoice]:
    """The model a version folder serves as `variant` asks, loaded and warmed up, and how it was chosen.

    `variant`: "gate" (the graph the version's record names), "auto" (every registered variant
    timed here, the fastest serves) or a registered variant's name. The folder's files are not
    checked here: the caller verifies them first (verify_files). `setting`: the key errors name.

    Raises:
        ModelLoadError: no such variant, or a graph that cannot be loaded or run.
    """
    files = variant_files(folder)
    if variant == "gate":
        graph = model_file(folder).name
        name = next((name for name, file in files.items() if file == graph), graph)
        return warmed_up(load_served(folder, threads, False, graph)), VariantChoice(name, "gate", {})
    if variant != "auto":
        if variant not in files:
            raise ModelLoadError(
                f"{folder}: {setting} {variant!r} is not registered in this version (it has {sorted(files)})"
            )
        return warmed_up(load_served(folder, threads, False, files[variant])), VariantChoice(variant, setting, {})
    timings: dict[str, float] = {}
    fastest: tuple[str, Served] | None = None
    for name, file in sorted(files.items()):
        classifier = warmed_up(load_served(folder, threads, False, file))
        timings[name] = time_batch(classifier)
        if fastest is None or timings[name] < timings[fastest[0]]:
            fastest = (name, classifier)
    assert fastest is not None  # variant_files is never empty
    return fastest[1], VariantChoice(fastest[0], "fastest on this host", timings)


def registered_at(folder: Path) -> float | None:
    """When the version in `folder` was registered (its record's created_at), or None if it does not say."""
    try:
        created = json.loads((folder / VERSION_FILE).read_text(encoding="utf-8"))["created_at"]
        return dt.datetime.fromisoformat(created).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None


class ProductionModel:
    """The registry's production model, reloaded when the production pointer changes."""

    def __init__(
        self,
        registry: Path | str,
        threads: int | None = None,
        retry: tuple[float, float] | None = None,
        variant: str = "gate",
        fall_back: bool = False,
    ):
        """`retry`: (first, longest) seconds before a failed load is tried again; None: only on a new pointer.

        `variant`: "gate" (the version's chosen graph), "auto" (its registered variants timed
        here, the fastest serves) or a variant name (serve.variant). `fall_back`: with nothing
        loaded and production unservable, serve its rollback target (a service; a one-off
        prediction had rather fail than answer from another version).
        """
        self.registry = Registry(registry)
        self.fall_back = fall_back
        self.pointer = f"{self.registry.url}/production.json"
        self.threads, self.variant = threads, variant
        self.choice: VariantChoice | None = None
        self._lock = threading.Lock()
        self._seen: str | None = ""  # the pointer's text when last read; None: it was absent
        self._loaded: tuple[str, Served] | None = None
        self._verified = False  # whether the serving version's files matched its recorded hashes
        self.created: float | None = None  # when the serving version was registered (seconds since the epoch)
        self.error: str | None = None  # why the newest pointer could not be served
        # The production version that cannot be served while its rollback target serves instead.
        self.fallback_for: str | None = None
        # A failed load is tried again after a back-off (doubling), even if the pointer stays.
        self._retry_s, self._retry_max_s = retry or (math.inf, math.inf)
        self._backoff, self._retry_at = self._retry_s, 0.0

    def _public(self, message: str) -> str:
        """An error for /health: a local registry's paths relative to its parent, one line, bounded."""
        first = message.splitlines()[0] if message else message
        local = self.registry.local
        return (first.replace(f"{local.parent}{os.sep}", "") if local else first)[:300]

    def _refresh(self) -> None:
        # Read the pointer itself, not its mtime: a coarse-mtime filesystem could hide a promotion.
        now = time.monotonic()
        try:
            text = self.registry.pointer_text()
        except RegistryError as exc:
            # The store is unreachable: keep serving what is loaded, say why (and try again later).
            if now >= self._retry_at or self.error is None:
                self.error = self._public(f"cannot read the production pointer {self.pointer}: {exc}")
                self._retry_at, self._backoff = now + self._backoff, min(self._backoff * 2, self._retry_max_s)
            return
        if text == self._seen and (self.error is None or now < self._retry_at):
            return
        if text != self._seen:
            self._seen, self._backoff = text, self._retry_s
        if text is None:
            self.error = self._public(f"{self.pointer}: no production model yet (run the pipeline to promote one)")
            return
        version = None
        try:
            version = self.registry.parse_pointer(text)
            if self._loaded is None or self._loaded[0] != version:
                self._load(version)
            if self.fallback_for is not None:
                log.warning("production %s serves again (no longer its rollback target)", version)
                self.fallback_for = None
            self.error = None
        except (ModelLoadError, RegistryError, OSError) as exc:
            self.error = self._public(f"cannot serve the production pointer {self.pointer}: {exc}")
            self._retry_at, self._backoff = now + self._backoff, min(self._backoff * 2, self._retry_max_s)
            if self.fall_back and version is not None and (self._loaded is None or self.fallback_for is not None):
                self._fall_back(version)

    def _load(self, version: str) -> None:
        """Load a version of the registry (its files verified first) and serve it."""
        folder = self.registry.fetch(version)  # complete, readable, local (a remote one: cached)
        verified = verify_files(folder)
        classifier, choice = self._load_variant(folder)
        self._loaded, self.choice = (version, classifier), choice
        self._verified = verified
        self.created = registered_at(folder)

    def _fall_back(self, production: str) -> None:
        """With nothing else to serve, serve the rollback target of `production`, which cannot be served.

        The target is the one `textclf registry rollback` would restore: the most recent previous
        production not rolled back whose files verify (and that loads). Nothing found: unavailable.
        """
        serving = self._loaded[0] if self._loaded else None
        if serving is None:
            try:
                candidates = self.registry.previous_productions(production)
            except (RegistryError, OSError) as exc:  # the history cannot be read: nothing to fall back to
                log.warning("no rollback target for %s: %s", production, self._public(str(exc)))
                return
            for candidate in candidates:
                try:
                    self._load(candidate)
                except (ModelLoadError, RegistryError, OSError) as exc:
                    log.warning("rollback target %s cannot be served either: %s", candidate, self._public(str(exc)))
                    continue
                serving = candidate
                break
            else:
                return
        self.fallback_for = production
        reason = self.error
        self.error = self._public(
            f"production {production} cannot be served; serving {serving} instead, the previous production "
            f"that verifies, until {production} verifies again or another version is promoted ({reason})"
        )
        log.warning("%s", self.error)

    @property
    def version(self) -> str | None:
        """The version loaded (serving), without reading the pointer; None before the first load."""
        loaded = self._loaded
        return loaded[0] if loaded else None

    def current(self) -> tuple[str, Served]:
        """(version, classifier) now serving; raises ModelLoadError when there is none."""
        with self._lock:
            self._refresh()
            if self._loaded is None:
                raise ModelLoadError(self.error or self._public(f"{self.pointer}: no production model"))
            return self._loaded

    def _load_variant(self, folder: Path) -> tuple[Served, VariantChoice]:
        return load_variant(folder, self.variant, self.threads)

    def serving(self) -> tuple[str, Served]:
        """(version, classifier) loaded now, without reading the pointer (no I/O: for every request).

        Raises:
            ModelLoadError: nothing is loaded.
        """
        loaded = self._loaded
        if loaded is None:
            raise ModelLoadError(self.error or self._public(f"{self.pointer}: no production model"))
        return loaded

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> tuple[str, list[Reply]]:
        """Answer `texts`; returns the serving version and a reply per text (a prediction, or its entities)."""
        version, model = self.current()
        return version, replies(model, texts, batch_size)

    def status(self, refresh: bool = True) -> dict[str, Any]:
        """What serves now, and any problem with the newest pointer (`refresh`: read the pointer first)."""
        try:
            version, classifier = self.current() if refresh else self.serving()
        except ModelLoadError as exc:
            return {"status": "unavailable", "version": None, "error": str(exc)}
        return {
            "status": "degraded" if self.error else "ok",
            "version": version,
            "labels": served_labels(classifier),
            # False: a version registered before records listed file hashes (nothing to check).
            "verified": self._verified,
            "variant": self.choice.variant if self.choice else None,
            "variant_chosen_by": self.choice.by if self.choice else None,
            "variant_timings_ms": self.choice.timings_ms if self.choice else None,
            "engine": classifier.engine.description,
            "error": self.error,
            "fallback_for": self.fallback_for,
        }


def predict(texts: Sequence[str], registry: Path | str = "registry", batch_size: int = 32) -> list[Reply]:
    """Answer texts with the production model in `registry` (a folder or a URL; no torch import): a
    Prediction per text, or for a token classifier a Tagged (its entities).

    Example:
        >>> predict(["a warm, clever film"])[0].label
    """
    return ProductionModel(registry).predict(texts, batch_size)[1]
