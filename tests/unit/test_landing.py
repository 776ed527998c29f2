"""New data on its own: checked, added as a batch and archived, or rejected with its report; the watcher."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from tasks.lib.data.incoming import batch_files
from tasks.lib.data.landing import NOT_STORED, NotStored, StillBeingWritten, ingest_new
from tasks.lib.data.watcher import LandingWatcher
from tasks.stages import ingest
from tests.support.hostile_files import parquet_bomb, pausing_writer

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


def test_a_file_left_because_it_was_still_being_written_is_read_again_though_unchanged(tmp_path):
    calls: list[str] = []

    def open_then_closed(path: Path) -> None:
        calls.append(path.name)
        if len(calls) == 1:  # its writer still had it open, then closed it without writing more
            raise StillBeingWritten(f"{path.name} is still open for writing")

    watcher = LandingWatcher(tmp_path, open_then_closed, poll_seconds=1, settle_seconds=0)
    (tmp_path / "a.csv").write_text("x")
    for _ in range(4):
        watcher.poll_once()
    assert calls == ["a.csv", "a.csv"]  # not set aside like a file whose handling failed


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


SLOW_PRODUCERS_ROWS = "text,label\n" + "".join(
    f"review {i} of the slow producer was {'fine' if i % 2 else 'dull'},{'positive' if i % 2 else 'negative'}\n"
    for i in range(400)
)


def test_a_producer_that_pauses_with_the_file_open_loses_no_rows(params):
    landing = params.path("landing")
    landing.mkdir(parents=True)
    receipts = []
    taken, done = threading.Event(), threading.Event()

    def handle(path: Path) -> None:
        taken.set()
        try:
            receipts.append(ingest_new(params, path, move=True))
        finally:
            done.set()

    stop = threading.Event()
    thread = threading.Thread(target=LandingWatcher(landing, handle, 0.1, 0.5).run, args=(stop,), daemon=True)
    thread.start()
    writer = pausing_writer(landing / "week.csv", SLOW_PRODUCERS_ROWS)
    try:
        # Quiet for 3 s, six times settle_seconds: only the open file says it is not finished. A watcher
        # that takes it anyway is let finish before the producer goes on, as with a long pause.
        if taken.wait(timeout=3):
            done.wait(timeout=60)
        writer.communicate("go on\n", timeout=60)
        deadline = time.monotonic() + 60
        while not receipts and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        writer.kill()
        stop.set()
        thread.join(timeout=60)
    (receipt,) = receipts
    assert receipt.accepted and receipt.rows == 400
    assert (params.root / receipt.moved_to).read_text() == SLOW_PRODUCERS_ROWS and not (landing / "week.csv").exists()


def test_a_file_a_process_holds_open_for_writing_is_left_in_place(params):
    path = land(params, "open.csv", GOOD)
    holder = [
        sys.executable,
        "-c",
        "import sys; f = open(sys.argv[1], 'a'); print('open', flush=True); sys.stdin.read()",
    ]
    writer = subprocess.Popen([*holder, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        with pytest.raises(StillBeingWritten, match=rf"open\.csv is still open for writing \(process {writer.pid}\)"):
            ingest_new(params, path, move=True)
        assert path.read_text() == GOOD and batch_files(params.path("incoming")) == []
    finally:
        writer.communicate("", timeout=30)
    assert ingest_new(params, path, move=True).accepted  # closed: taken


# `textclf ingest-new` under a 3 GiB address-space limit, as a container's memory limit would hold it.
CAPPED_INGEST = [
    sys.executable,
    "-c",
    "import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
    "sys.argv[0] = 'textclf'; runpy.run_module('tasks', run_name='__main__', alter_sys=True)",
]


def test_a_parquet_bomb_is_refused_by_its_decoded_size_in_little_memory(params, monkeypatch):
    from tasks.apps import service

    landing = params.path("landing")
    landing.mkdir(parents=True)
    parquet_bomb(landing / "bomb.parquet")
    monkeypatch.setattr(service, "INGEST_COMMAND", CAPPED_INGEST)
    watcher = LandingWatcher(landing, lambda path: service.ingest_landed(params, path), 0.01, 0)
    assert watcher.poll_once() + watcher.poll_once() == 1
    (receipt,) = [json.loads(p.read_text()) for p in params.path("rejected").glob("*/receipt.json")]
    # Named: the file, the row where the values pass the bound (50 MB / 2,007 bytes a row), the column.
    refusal = r"bomb\.parquet:24913: field 'text': decodes past data\.max_expanded_bytes \(50000000 bytes\)"
    assert not receipt["accepted"] and re.search(refusal, receipt["reason"])
    assert not (landing / "bomb.parquet").exists()
    (note,) = [json.loads(line) for line in params.path("notifications").read_text().splitlines()]
    assert note["event"] == "data.rejected" and re.search(refusal, note["title"])


@contextmanager
def full_filesystem(folder: Path) -> Iterator[Path]:
    """A 64 KB file system (tmpfs) mounted on `folder` for the block: a real full disk, no mock."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    done = mount and subprocess.run([mount, "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if not done or done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root and mount): {done and done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def big_csv(label: str = "positive") -> str:
    """About 170 KB of reviews: more than the full file system holds."""
    return "text,label\n" + "".join(f"review {i} of a long week was fine,{label}\n" for i in range(4000))


def test_a_full_disk_leaves_no_partial_copy_says_which_folder_and_notifies(params, capsys):
    from tasks.apps.cli import main

    path = land(params, "week.csv", big_csv())
    with full_filesystem(params.path("archive")) as archive:
        code = main(["--root", str(params.root), "ingest-new", str(path)])
        assert list(archive.iterdir()) == []  # no partial copy keeps the disk full
    error = capsys.readouterr().err
    full = rf"week\.csv: not added: writing to {archive}/0001-\w+ failed \(the file system that holds it is full"
    assert code == NOT_STORED and re.search(f"^error: {full}", error.splitlines()[-1])
    assert "Errno 28" not in error.replace("errno 28", "")  # no raw OSError (Prefect logs the flow's own error)
    assert path.read_text() == big_csv() and batch_files(params.path("incoming")) == []  # nothing lost or half-added
    note = json.loads(params.path("notifications").read_text().splitlines()[-1])
    assert note["event"] == "data.not_stored" and re.search(full, note["title"])
    # A rejected file moved to a full disk: no half-written folder there either, and the file stays.
    bad = land(params, "bad.csv", big_csv(label="neutral"))
    with full_filesystem(params.path("rejected")) as rejected:
        with pytest.raises(NotStored, match=rf"bad\.csv: not added: writing to {rejected} failed \(the file system"):
            ingest_new(params, bad, move=True)
        assert list(rejected.iterdir()) == []
    assert bad.read_text() == big_csv(label="neutral")
    assert ingest_new(params, path, move=True).accepted  # room again: read again, whole


def test_a_child_that_could_not_store_the_file_is_not_notified_twice(params, monkeypatch):
    from tasks.apps import service

    path = land(params, "week.csv", GOOD)
    # The child's flow has sent the notification naming the full folder; the watcher adds none.
    monkeypatch.setattr(service, "INGEST_COMMAND", [sys.executable, "-c", f"raise SystemExit({NOT_STORED})"])
    with pytest.raises(service.IngestionFailed, match=r"week\.csv: could not be stored; it stays in landing"):
        service.ingest_landed(params, path)
    assert path.exists() and not params.path("notifications").exists()
