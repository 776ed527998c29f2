"""SST-2 rows for the benchmarks: ../shared/data/sst2 read with the project's reader, labels named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.lib.columns import LABEL
from tasks.lib.config import Params
from tasks.lib.data.readers import read_file
from tasks.lib.validation.features import map_labels

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
SST2_LABELS = {"0": "negative", "1": "positive"}
LABELS = ["negative", "positive"]


def sst2(params: Params, name: str) -> pd.DataFrame:
    """One SST-2 file (train.tsv, dev.tsv) with its labels named."""
    frame = read_file(SST2 / name, params.data.model_copy(update={"label_map": SST2_LABELS}))
    frame[LABEL] = list(map_labels(frame[LABEL], SST2_LABELS))
    return frame


def train_and_val(params: Params, rows: int, val_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two disjoint seeded samples of the training file: rows to train on, rows to choose the checkpoint
    on (so SST-2 dev stays unseen)."""
    pool = sst2(params, "train.tsv").sample(n=rows + val_rows, random_state=0).reset_index(drop=True)
    return pool.iloc[:rows].reset_index(drop=True), pool.iloc[rows:].reset_index(drop=True)
