"""The labelling tests' Label Studio: benchmarks/label_studio_server.py's, started for a module."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tasks.lib.labelling.label_studio import Connection
from tests.support.repo import REPO


@contextmanager
def label_studio(folder: Path) -> Iterator[Connection]:
    """A real Label Studio with its data in `folder`, for the block; yields its URL and API token."""
    spec = importlib.util.spec_from_file_location("label_studio_server", REPO / "benchmarks" / "label_studio_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = module.LabelStudioServer(folder)
    try:
        yield server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    finally:
        server.stop()
