"""Stage `ingest`: the configured source plus every accepted batch of new data, as one raw table."""

from __future__ import annotations

import pandas as pd

from tasks.lib.artifacts import IngestMetrics
from tasks.lib.columns import SPLIT
from tasks.lib.config import Params
from tasks.lib.incoming import accepted_names, batch_files, data_version, read_batches
from tasks.lib.io import write_table
from tasks.lib.readers import read_source
from tasks.lib.stage_runner import run_as_script


def run(params: Params) -> None:
    """Stage entry point: the source plus every accepted batch of new data -> `paths.raw`; metrics/ingest.json."""
    frame = read_source(params.data, params.root)
    source_rows = len(frame)
    incoming = params.path("incoming")
    batches = batch_files(incoming)
    added = read_batches(batches)
    if added is not None:
        frame = pd.concat([frame, added], ignore_index=True)
    write_table(params.path("raw"), frame)
    version, accepted = data_version(incoming), len(accepted_names(incoming))
    IngestMetrics(
        rows=len(frame),
        source_rows=source_rows,
        batches=accepted,
        batch_rows=len(frame) - source_rows,
        data_version=version,
    ).write(params)
    splits = frame[SPLIT].fillna("unsplit").value_counts().to_dict()
    print(
        f"ingest: {len(frame)} rows: {source_rows} from {params.data.source}, {len(frame) - source_rows} "
        f"from {accepted} batches of new data (data version {version}) ({splits})"
    )


if __name__ == "__main__":
    run_as_script(run)
