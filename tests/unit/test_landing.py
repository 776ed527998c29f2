"""New data on its own: checked, added as a batch and archived, or rejected with its report; the watcher."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.lib.data.incoming import batch_files
from tasks.lib.data.landing import ingest_new
from tasks.lib.data.watcher import LandingWatcher
from tasks.stages import ingest

GOOD = 'text,label\n"a fine film, truly",positive\n"a dull and messy plot",negative\n"a fine film, truly",positive\n'


@pytest.fixture
def params(make_params):
    return make_params({"data": {"demo": {"rows": 120}}})


def land(params, name: str, text: str) -> Path:
    path = params.path("landing") / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_an_accepted_file_becomes_a_batch_the_ingest_stage_appends(params):
    receipt = ingest_new(params, land(params, "week1.csv", GOOD), move=True)
    assert receipt.accepted and receipt.batch == "b0001" and receipt.rows == 3
    assert not (params.path("landing") / "week1.csv").exists()  # moved
    archived = params.root / receipt.moved_to
    assert archived.read_text() == GOOD and archived.parent.name == receipt.data_version
    assert json.loads((archived.parent / "receipt.json").read_text())["sha256"] == receipt.sha256
    (batch,) = batch_files(params.path("incoming"))
    rows = pd.read_parquet(batch)
    # Rows point at the archived original and their line; the repeated text goes on (validate quarantines it).
    assert rows["row_id"].tolist() == ["b0001/week1.csv:2", "b0001/week1.csv:3", "b0001/week1.csv:4"]
    assert set(rows["source_file"]) == {receipt.moved_to}
    ingest.run(params)
    raw = pd.read_parquet(params.path("raw"))
    assert len(raw) == 123 and raw["row_id"].str.startswith("b0001/").sum() == 3
    metrics = json.loads((params.path("metrics") / "ingest.json").read_text())
    assert metrics == {
        "rows": 123,
        "source_rows": 120,
        "batches": 1,
        "batch_rows": 3,
        "data_version": receipt.data_version,
    }


def test_a_file_failing_a_fail_rule_is_rejected_with_file_line_and_field(params):
    path = land(params, "bad.csv", 'text,label\n"great fun",positive\n"meh",neutral\n')
    receipt = ingest_new(params, path, move=True)
    assert not receipt.accepted and receipt.reason == "failed validation: label_in_set (1 rows)"
    folder = (params.root / receipt.moved_to).parent
    assert (folder / "bad.csv").exists() and not path.exists()
    report = (folder / "report.md").read_text()
    assert "bad.csv:3: 'meh' (label 'neutral'): label 'neutral' is not one of ['negative', 'positive']" in report
    flagged = [json.loads(line) for line in (folder / "rows.jsonl").read_text().splitlines()]
    assert [(r["line"], r["label"]) for r in flagged] == [(3, "neutral")]
    assert batch_files(params.path("incoming")) == []


def test_an_unreadable_file_is_rejected_and_a_copied_original_stays(params, tmp_path):
    outside = tmp_path / "export.csv"
    outside.write_text('text,label\n"fine",positive,extra\n')
    receipt = ingest_new(params, outside, move=False)
    assert not receipt.accepted and "export.csv:2" in receipt.reason and "unexpected value 'extra'" in receipt.reason
    assert outside.exists() and (params.root / receipt.moved_to).exists()  # copied: someone else's file


def test_the_same_bytes_twice_are_rejected_as_a_duplicate(params):
    first = ingest_new(params, land(params, "a.csv", GOOD), move=True)
    again = ingest_new(params, land(params, "a-again.csv", GOOD), move=True)
    assert first.accepted and not again.accepted
    assert again.reason == "the same bytes were accepted before as batch b0001"
    assert len(batch_files(params.path("incoming"))) == 1


def test_batches_number_on_and_the_data_version_names_them_all(params):
    one = ingest_new(params, land(params, "a.csv", GOOD), move=True)
    two = ingest_new(params, land(params, "b.csv", GOOD.replace("truly", "really")), move=True)
    assert (one.batch, two.batch) == ("b0001", "b0002")
    assert one.data_version.startswith("0001-") and two.data_version.startswith("0002-")
    assert len({one.data_version, two.data_version}) == 2


def test_the_watcher_waits_for_a_file_to_settle_and_skips_temporary_names(tmp_path):
    handled: list[str] = []
    watcher = LandingWatcher(tmp_path, lambda p: handled.append(p.name), poll_seconds=1, settle_seconds=5)
    (tmp_path / "new.csv").write_text("text,label\n")
    (tmp_path / ".hidden.csv").write_text("x")
    (tmp_path / "upload.csv.part").write_text("x")
    (tmp_path / "notes.md").write_text("x")  # not a data format
    assert watcher.settled(now=0) == []  # first sight
    assert watcher.settled(now=3) == []  # not settled yet
    (tmp_path / "new.csv").write_text("text,label\nmore,positive\n")  # still being written
    assert watcher.settled(now=6) == []
    assert watcher.settled(now=12) == [tmp_path / "new.csv"]


def test_a_file_whose_handling_fails_is_retried_only_once_it_changes(tmp_path):
    calls: list[str] = []

    def broken(path: Path) -> None:
        calls.append(path.name)
        raise OSError("disk full")

    watcher = LandingWatcher(tmp_path, broken, poll_seconds=1, settle_seconds=0)
    (tmp_path / "a.csv").write_text("x")
    for _ in range(4):
        watcher.poll_once()
    assert calls == ["a.csv"]
    (tmp_path / "a.csv").write_text("changed")
    watcher.poll_once()
    watcher.poll_once()
    assert calls == ["a.csv", "a.csv"]


def test_a_notification_goes_to_the_log_file_and_to_a_prefect_notification_block(make_params, webhook):
    # A real Prefect CustomWebhookNotificationBlock posting to a webhook on loopback.
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    from tasks.lib.reporting.notify import notify

    CustomWebhookNotificationBlock(
        name="ops", url=f"{webhook.url}/hook", json_data={"subject": "{{subject}}", "text": "{{body}}"}
    ).save("textclf-test-ops", overwrite=True)
    params = make_params({"retrain": {"notify_block": "custom-webhook/textclf-test-ops"}})
    record = notify(params, "pipeline.failed", "run x Failed: ## Gate: REJECTED", "accuracy is 0.41")
    received = webhook.received
    assert received == [{"subject": "run x Failed: ## Gate: REJECTED", "text": "accuracy is 0.41"}]
    assert "delivery_error" not in record and record["sent_to"] == "custom-webhook/textclf-test-ops"
    logged = json.loads(params.path("notifications").read_text())
    assert logged["event"] == "pipeline.failed" and logged["body"] == "accuracy is 0.41"
    # An unreachable target is recorded, not raised: the run's own outcome is what counts.
    params = make_params({"retrain": {"notify_block": "custom-webhook/no-such-block"}})
    assert "delivery_error" in notify(params, "pipeline.failed", "t", "b")
