"""Stage `validate`: Great Expectations suites built from params, a quarantine, Data Docs.

Row rules flag rows; each rule's policy (params `validate.rules`) says whether
a flagged row stops the run (`fail`), is set aside (`quarantine`) or is only
reported (`warn`). Every flagged row lands in the quarantine file with its
source line and reasons: nothing is dropped silently. Dataset rules (size,
class balance, drift against the last accepted dataset) then judge what
remains. The previous validated data stays in place when this fails.
"""

from __future__ import annotations

import contextlib
import json
import logging

import pandas as pd

from tasks.lib.artifacts import VALIDATION_REPORT_FILE, ValidateMetrics
from tasks.lib.columns import LABEL, RAW_COLUMNS, TEXT
from tasks.lib.config import Params
from tasks.lib.data.batches import ParquetTable
from tasks.lib.errors import PipelineError
from tasks.lib.io import TableWriter, atomic_dir, atomic_path, write_text
from tasks.lib.stage_runner import run_as_script
from tasks.lib.validation.checks import check
from tasks.lib.validation.features import TokenCounter
from tasks.lib.validation.report import render, summary
from tasks.lib.validation.spark import raw_url
from tasks.lib.validation.unknown_labels import unknown_labels_advice

log = logging.getLogger(__name__)


class ValidationFailed(PipelineError, RuntimeError):
    """The data is unfit; the message is the readable summary."""


def run(params: Params) -> None:
    """Stage entry point: write validated rows, quarantine, summary, report and Data Docs; raise if unfit.

    The raw table is read in batches (tasks.lib.validation.checks), and the accepted rows are
    written batch by batch to a staging file that replaces the validated data only on success.
    """
    raw = ParquetTable(params.path("raw"))
    accepted = params.path("validated")
    baseline = ParquetTable(accepted) if accepted.exists() else None
    bounds = (params.validate_.min_tokens, params.validate_.max_tokens)
    counter = TokenCounter(params.train.base_model, params.root, bounds)
    spark = params.validate_.spark
    spark_url = raw_url(spark, raw.path) if params.validate_.engine == "spark" else None
    reports = params.path("reports")
    # The validated output is declared `persist` in dvc.yaml and only replaced on success,
    # so the last good data (and the drift baseline) stays.
    with contextlib.ExitStack() as stack:
        staging = stack.enter_context(atomic_path(accepted))
        writer = stack.enter_context(TableWriter(staging, RAW_COLUMNS))
        with atomic_dir(reports / "data_docs") as docs:
            outcome = check(
                raw,
                params.data,
                params.validate_,
                counter,
                baseline,
                docs,
                keep=writer.write,
                spark_url=spark_url,
                task=params.task,
            )
        outcome.docs = reports / "data_docs" / "index.html"  # published by the rename
        quarantine = params.path("quarantine")
        with atomic_path(quarantine) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome.records), encoding="utf-8")
        report = summary(outcome, raw.rows, params.validate_.report_text)
        ValidateMetrics.parse(report, "validate summary").write(params)
        text = render(report, quarantine)
        unknown = outcome.rules.get("label_in_set")  # sequence classification only
        if unknown is not None and unknown.rows:
            flagged = pd.DataFrame(outcome.records, columns=[TEXT, LABEL])
            advice = unknown_labels_advice(flagged, params.data, params.location("registry"), params.split.seed)
            text += f"\n\n{advice}" if advice else ""
        write_text(reports / VALIDATION_REPORT_FILE, text + "\n")
        if not outcome.passed:
            raise ValidationFailed(text)
    log.info(text)


if __name__ == "__main__":
    run_as_script(run)
