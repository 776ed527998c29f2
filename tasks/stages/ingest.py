"""Stage `ingest`: the configured source plus every accepted batch of new data, as one raw table.

Read and written a batch at a time (tasks.lib.data.readers.iter_source, a Parquet row group per
batch), so memory does not grow with the data; a reader error stops the stage before the
previous raw table is replaced.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import pandas as pd

from tasks.lib.artifacts import IngestMetrics
from tasks.lib.columns import RAW_COLUMNS, SPLIT
from tasks.lib.config import Params
from tasks.lib.data.incoming import accepted_names, batch_files, data_version
from tasks.lib.data.readers import iter_source
from tasks.lib.io import read_table, write_batches
from tasks.lib.stage_runner import run_as_script

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Stage entry point: the source plus every accepted batch of new data -> `paths.raw`; metrics/ingest.json."""
    incoming = params.path("incoming")
    batches = batch_files(incoming)
    counted = {"source": 0}
    splits: Counter[str] = Counter()

    def rows() -> Iterator[pd.DataFrame]:
        for batch in iter_source(params.data, params.root, params.task):
            counted["source"] += len(batch)
            splits.update(batch[SPLIT].fillna("unsplit").value_counts().to_dict())
            yield batch
        for path in batches:
            added = read_table(path)
            splits.update(added[SPLIT].fillna("unsplit").value_counts().to_dict())
            yield added

    total = write_batches(params.path("raw"), rows(), RAW_COLUMNS)
    source_rows = counted["source"]
    version, accepted = data_version(incoming), len(accepted_names(incoming))
    IngestMetrics(
        rows=total,
        source_rows=source_rows,
        batches=accepted,
        batch_rows=total - source_rows,
        data_version=version,
    ).write(params)
    log.info(
        f"ingest: {total} rows: {source_rows} from {params.data.source}, {total - source_rows} "
        f"from {accepted} batches of new data (data version {version}) ({dict(splits)})"
    )


if __name__ == "__main__":
    run_as_script(run)
