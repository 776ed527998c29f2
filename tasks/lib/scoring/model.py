"""The version `textclf score` runs: a registered version (or production's), its files checked, one variant loaded.

The same load as serving's (tasks.lib.inference.production_model): the version's folder (a remote
registry's, downloaded to the local cache), every file checked against the SHA-256 its record
lists, then the variant `score.variant` names; `auto` times each registered variant here and
keeps the fastest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tasks.lib.artifacts import VERSION_FILE
from tasks.lib.inference.onnx_tagger import Tagger
from tasks.lib.inference.production_model import (
    ModelLoadError,
    Served,
    VariantChoice,
    load_variant,
    model_file,
    variant_files,
)
from tasks.lib.io import file_digest
from tasks.lib.storage.registry import Registry, RegistryError, verify_files

PRODUCTION = "production"


@dataclass(frozen=True)
class ScoringModel:
    """A loaded version: what it is, where its checked files are, and the model of the chosen variant."""

    version: str
    choice: VariantChoice
    folder: Path  # local, its files checked
    graph_file: str  # the chosen variant's graph, in `folder`
    record_sha256: str  # of its version.json: what a Spark executor checks its shipped copy against
    model: Served

    @property
    def tagger(self) -> bool:
        return isinstance(self.model, Tagger)

    @property
    def labels(self) -> list[str]:
        return self.model.info.labels


def resolve_version(registry: Registry, version: str) -> str:
    """`version` itself (checked to exist), or for `production` the version the pointer names now.

    Raises:
        ModelLoadError: no production version yet, or no such version.
    """
    if version == PRODUCTION:
        try:
            found = registry.production_version()
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from None
        if found is None:
            raise ModelLoadError(f"{registry.url}: no production model yet (run the pipeline, or give --version)")
        return found
    try:
        registry.record(version)
    except RegistryError as exc:
        raise ModelLoadError(f"--version {version}: {exc}") from None
    return version


def load_scoring_model(registry: Registry, version: str, variant: str, threads: int | None) -> ScoringModel:
    """Version `version` of `registry`, verified, with `variant` (auto, gate or a name) loaded and warmed up.

    Raises:
        ModelLoadError: the files differ from the registered ones, or the variant cannot be loaded.
    """
    try:
        folder = registry.fetch(version)
        verify_files(folder)
    except RegistryError as exc:
        raise ModelLoadError(str(exc)) from None
    model, choice = load_variant(folder, variant, threads, setting="score.variant")
    files = variant_files(folder)
    graph = files.get(choice.variant) or model_file(folder).name
    return ScoringModel(version, choice, folder, graph, file_digest(folder / VERSION_FILE, "sha256"), model)
