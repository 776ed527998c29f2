"""Stage `reference`: the reference profile of the candidate the gate chose, registered with it by promote.

What monitoring compares served traffic with (tasks.lib.monitoring.reference_profile): a seeded sample
of the training texts with their embeddings, and a seeded sample of the test split as the
serving variant answers it.
"""

from __future__ import annotations

import logging

import pandas as pd

from tasks.lib.artifacts import GateMetrics
from tasks.lib.config import Params
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_table
from tasks.lib.monitoring.reference_profile import build_profile, write_profile
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training.models import resolve_base_model

log = logging.getLogger(__name__)


def sample(table: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    """At most `rows` rows of `table`, a seeded sample when it has more."""
    return table if len(table) <= rows else table.sample(n=rows, random_state=seed)


def run(params: Params) -> None:
    """Stage entry point: write paths.reference."""
    gate = GateMetrics.read(params)
    if not gate.passed or gate.model_file is None:
        raise PipelineError("reference: the gate did not pass, so no candidate is to be registered or profiled")
    config, seed = params.monitor, params.split.seed
    folder = params.path("quantized")
    train = sample(read_table(params.path("train_split")), config.reference_rows, seed)
    test = sample(read_table(params.path("test_split")), config.reference_rows, seed)
    spec = config.embedding_model or params.train.base_model
    profile = build_profile(train, test, folder, gate.model_file, resolve_base_model(spec, params.root))
    write_profile(profile, params.path("reference"), spec)
    log.info(f"reference: {len(train)} training and {len(test)} test texts profiled ({gate.serving_variant})")


if __name__ == "__main__":
    run_as_script(run)
