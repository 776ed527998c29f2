"""Stage `validate`: Great Expectations suites built from params, a quarantine, Data Docs.

Row rules flag rows; each rule's policy (params `validate.rules`) says whether
a flagged row stops the run (`fail`), is set aside (`quarantine`) or is only
reported (`warn`). Every flagged row lands in the quarantine file with its
source line and reasons: nothing is dropped silently. Dataset rules (size,
class balance, drift against the last accepted dataset) then judge what
remains. The previous validated data stays in place when this fails.
"""

from __future__ import annotations

import json

from tasks.lib.artifacts import VALIDATION_REPORT_FILE, ValidateMetrics
from tasks.lib.columns import TEXT
from tasks.lib.config import Params
from tasks.lib.errors import PipelineError
from tasks.lib.io import (
    atomic_dir,
    atomic_path,
    read_table,
    write_table,
    write_text,
)
from tasks.lib.stage_runner import run_as_script
from tasks.lib.unknown_labels import unknown_labels_advice
from tasks.lib.validation.checks import check
from tasks.lib.validation.features import token_counts
from tasks.lib.validation.report import quarantine_records, render, summary


class ValidationFailed(PipelineError, RuntimeError):
    """The data is unfit; the message is the readable summary."""


def run(params: Params) -> None:
    """Stage entry point: write validated rows, quarantine, summary, report and Data Docs; raise if unfit."""
    frame = read_table(params.path("raw"))
    accepted = params.path("validated")
    baseline = read_table(accepted) if accepted.exists() else None
    tokens = token_counts(frame[TEXT].tolist(), params.train.base_model, params.root)
    reports = params.path("reports")
    with atomic_dir(reports / "data_docs") as staging:
        outcome = check(frame, params.data, params.validate_, tokens, baseline, staging)
    outcome.docs = reports / "data_docs" / "index.html"  # published by the rename
    records = quarantine_records(frame, outcome)
    quarantine = params.path("quarantine")
    with atomic_path(quarantine) as tmp:
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    report = summary(outcome, records, len(frame), params.validate_.report_text)
    ValidateMetrics.parse(report, "validate summary").write(params)
    text = render(report, quarantine)
    if outcome.rules["label_in_set"].rows:
        advice = unknown_labels_advice(frame, params.data, params.location("registry"), params.split.seed)
        text += f"\n\n{advice}" if advice else ""
    write_text(reports / VALIDATION_REPORT_FILE, text + "\n")
    if not outcome.passed:
        # The validated output is declared `persist` in dvc.yaml and only
        # written on success, so the last good data (and the drift baseline) stays.
        raise ValidationFailed(text)
    write_table(accepted, outcome.kept)
    print(text)


if __name__ == "__main__":
    run_as_script(run)
