"""Integrity: what lands, what is registered and what is served cannot be swapped or fooled quietly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tasks.apps.cli import main
from tasks.lib.data.incoming import batch_files, read_batches
from tasks.lib.data.landing import ingest_new, is_ready
from tasks.lib.inference.production_model import ModelLoadError, ProductionModel, load_classifier
from tasks.lib.reporting.notify import notify
from tasks.lib.storage.registry import Registry, RegistryError

GOOD_ROWS = "text,label\n" + "".join(
    f"review number {i} was {'good' if i % 2 else 'bad'},{'positive' if i % 2 else 'negative'}\n" for i in range(20)
)


def registered(params, folder: Path) -> Registry:
    registry = Registry(params.path("registry"))
    registry.set_production(registry.register(folder, {"model_md5": "a"}), "test")
    return registry


# Landing


def test_a_symbolic_link_is_refused_and_what_it_points_at_is_untouched(make_params, tmp_path):
    params = make_params()
    outside = tmp_path / "elsewhere" / "secret.csv"
    outside.parent.mkdir()
    outside.write_text(GOOD_ROWS)
    landing = params.path("landing")
    landing.mkdir(parents=True)
    (landing / "link.csv").symlink_to(outside)
    receipt = ingest_new(params, landing / "link.csv", move=True)
    assert not receipt.accepted and "symbolic link" in receipt.reason
    assert outside.read_text() == GOOD_ROWS  # neither read into the data, nor moved, nor deleted
    assert batch_files(params.path("incoming")) == [] and not (landing / "link.csv").exists()
    moved = params.root / receipt.moved_to
    assert moved.is_symlink() and moved.resolve() == outside  # the link itself is what moved
    os.mkfifo(landing / "pipe.csv")
    assert "not a regular file" in ingest_new(params, landing / "pipe.csv", move=True).reason
    (landing / "folder.csv").mkdir()
    assert is_ready(landing / "folder.csv")  # handed over by the watcher, to be refused
    assert "not a regular file" in ingest_new(params, landing / "folder.csv", move=True).reason


def test_a_file_name_that_is_not_utf8_is_refused_and_the_notification_still_goes_out(make_params):
    params = make_params()
    landing = params.path("landing")
    landing.mkdir(parents=True)
    odd = Path(os.fsdecode(bytes(landing) + b"/reviews-\xff.csv"))
    odd.write_text(GOOD_ROWS)
    receipt = ingest_new(params, odd, move=True)
    assert not receipt.accepted and "not valid UTF-8" in receipt.reason
    assert receipt.file.endswith("reviews-\\xff.csv") and not odd.exists()
    assert (params.root / receipt.moved_to).read_text() == GOOD_ROWS  # kept, under a printable name
    notify(params, "data.rejected", f"{odd.name} rejected", receipt.reason)
    logged = json.loads(params.path("notifications").read_text(encoding="utf-8"))
    assert logged["title"] == "reviews-\\udcff.csv rejected"


def test_batches_past_9999_are_read_in_order(tmp_path):
    for number in (9998, 9999, 10000, 10001):
        pd.DataFrame({"text": [f"row {number}"]}).to_parquet(tmp_path / f"b{number:04d}-{number:016x}.parquet")
    (tmp_path / "b12-notabatch.parquet").write_bytes(b"")
    found = batch_files(tmp_path)
    assert [p.name.split("-")[0] for p in found] == ["b9998", "b9999", "b10000", "b10001"]
    assert list(read_batches(found)["text"]) == ["row 9998", "row 9999", "row 10000", "row 10001"]


# Registry


def test_a_file_changed_after_registration_is_refused_and_production_keeps_serving(make_params, onnx_folder):
    params = make_params()
    registry = registered(params, onnx_folder)
    model = ProductionModel(registry.root)
    assert model.current()[0] == "v0001"
    swapped = registry.register(onnx_folder, {"model_md5": "b"})
    registry.set_production(swapped, "verified when promoted")
    info = registry.versions / swapped / "classifier.json"
    labels = json.loads(info.read_text())
    info.write_text(json.dumps({**labels, "labels": labels["labels"][::-1]}))  # every answer inverted, since
    with pytest.raises(ModelLoadError, match=r"classifier\.json differs from the registered file"):
        load_classifier(registry.versions / swapped)
    assert model.current()[0] == "v0001"
    status = model.status()
    assert status["status"] == "degraded" and "classifier.json differs" in status["error"]
    assert str(registry.root.parent) not in status["error"]  # /health shows no absolute paths


def test_a_torn_history_line_is_reported_and_the_registry_keeps_working(make_params, onnx_folder, capsys):
    params = make_params()
    registry = registered(params, onnx_folder)
    registry.set_production(registry.register(onnx_folder, {"model_md5": "b"}), "second")
    with registry.history.open("a") as handle:
        handle.write('{"at": "2026-12-01T00:00:00+00:00", "event": "prom')  # a full disk mid-line
    assert registry.stages() == {"v0001": "archived", "v0002": "production"}
    assert registry.history_problems() and "history.jsonl:5: unreadable" in registry.history_problems()[0]
    assert registry.rollback("bad model") == ("v0002", "v0001")  # the next line starts on a line of its own
    assert [e["event"] for e in registry.events()][-2:] == ["history_problem", "rollback"]
    assert main(["--root", str(params.root), "registry", "list"]) == 0
    captured = capsys.readouterr()
    assert "v0001    production" in captured.out and "unreadable, skipped" in captured.err
    (registry.versions / "v0002" / "version.json").write_text('{"version": "v00')  # truncated
    assert main(["--root", str(params.root), "registry", "list"]) == 0
    assert "v0002    archived    damaged:" in capsys.readouterr().out
    assert main(["--root", str(params.root), "registry", "show", "v0002"]) == 1
    assert "version.json: damaged, not readable JSON" in capsys.readouterr().err


@pytest.mark.parametrize("pointer", ['{"version": null}', '{"version": "../../elsewhere"}', '{"version": "/tmp"}', "{"])
def test_a_pointer_that_names_no_version_is_not_served(make_params, onnx_folder, tmp_path, pointer):
    params = make_params()
    registry = registered(params, onnx_folder)
    served = ProductionModel(registry.root)
    assert served.current()[0] == "v0001"
    shutil.copytree(onnx_folder, tmp_path / "elsewhere")
    registry.pointer.write_text(pointer)
    assert served.status()["status"] == "degraded" and served.current()[0] == "v0001"
    fresh = ProductionModel(registry.root)
    assert fresh.status()["status"] == "unavailable"
    with pytest.raises(ModelLoadError, match=r"not a version of this registry|damaged"):
        fresh.current()


def test_a_failed_load_is_retried_with_back_off(make_params, onnx_folder):
    params = make_params()
    registry = registered(params, onnx_folder)
    served = ProductionModel(registry.root, retry=(0.05, 0.2))
    assert served.current()[0] == "v0001"
    version = registry.register(onnx_folder, {"model_md5": "b"})
    graph = registry.versions / version / "model.onnx"
    aside = graph.with_name("aside")
    registry.set_production(version, "second")
    graph.rename(aside)  # missing for a moment, as on a slow network mount
    assert served.current()[0] == "v0001" and "model.onnx is missing" in (served.error or "")
    aside.rename(graph)
    deadline = time.monotonic() + 10
    while served.current()[0] != version:  # the pointer did not change: only the back-off retries
        assert time.monotonic() < deadline, served.error
    assert served.error is None


def test_written_files_follow_the_umask(make_params, onnx_folder):
    previous = os.umask(0o022)
    try:
        params = make_params()
        registry = registered(params, onnx_folder)
    finally:
        os.umask(previous)
    for path in (registry.pointer, registry.versions / "v0001" / "version.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


# Serving


def test_requests_that_are_not_text_get_422_not_500(make_params, onnx_folder):
    from fastapi.testclient import TestClient

    from tasks.apps.http_service import create_app

    params = make_params()
    registered(params, onnx_folder)
    with TestClient(create_app(ProductionModel(params.path("registry")), params.serve)) as client:
        assert client.post("/predict", json={"texts": ["a fine film"]}).status_code == 200
        for texts, why in (
            ([""], "no visible character"),
            (["\x00\x00"], "no visible character"),
            (["  \u200b "], "no visible character"),
        ):
            answer = client.post("/predict", json={"texts": texts})
            assert answer.status_code == 422 and why in answer.text, texts
        lone = client.post(
            "/predict", content=b'{"texts": ["ok", "\\ud800"]}', headers={"content-type": "application/json"}
        )
        assert lone.status_code == 422 and "text 1 is not valid Unicode" in lone.text
        extra = client.post("/predict", json={"texts": ["ok"], "threshold": 0.9})
        assert extra.status_code == 422 and "threshold" in extra.text


# Notifications


def test_a_webhook_that_answers_403_leaves_no_token_in_the_log(make_params, caplog, webhook):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    webhook.status = 403
    url = f"{webhook.url}/services/T0/B0/s3cr3tT0ken?sig=0p3nsesame"
    CustomWebhookNotificationBlock(name="ops", url=url, json_data={"text": "{{body}}"}).save(
        "textclf-test-refusing", overwrite=True
    )
    params = make_params({"retrain": {"notify_block": "custom-webhook/textclf-test-refusing"}})
    record = notify(params, "pipeline.failed", "run failed", f"posted to {url} with token=abc123")
    logged = params.path("notifications").read_text() + caplog.text
    assert "403" in str(record["delivery_error"])
    for secret in ("s3cr3tT0ken", "0p3nsesame", "abc123"):
        assert secret not in logged


def test_a_file_is_hashed_judged_and_archived_as_one_snapshot(make_params, monkeypatch):
    from tasks.lib.data import landing

    params = make_params()
    source = params.root / "week.csv"
    source.write_text(GOOD_ROWS)
    judged: list[bytes] = []
    check = landing.check_file

    def check_then_grow(path, params):  # the producer appends while the file is being judged
        judged.append(path.read_bytes())
        with source.open("a") as handle:
            handle.write("a late row that nobody validated,positive\n")
        return check(path, params)

    monkeypatch.setattr(landing, "check_file", check_then_grow)
    receipt = ingest_new(params, source, move=False)
    archived = (params.root / receipt.moved_to).read_bytes()
    assert receipt.accepted and judged == [archived] == [GOOD_ROWS.encode()]
    assert receipt.sha256 == hashlib.sha256(archived).hexdigest() and receipt.rows == 20


def test_a_file_that_changes_while_it_is_read_is_left_for_later(make_params, monkeypatch):
    from tasks.lib.data import landing
    from tasks.lib.data.landing import StillBeingWritten

    params = make_params()
    source = params.root / "week.csv"
    source.write_text(GOOD_ROWS)
    read_once = landing._read_once

    def read_while_written(path, limit):
        found = read_once(path, limit)
        with source.open("a") as handle:
            handle.write("more,positive\n")
        return found

    monkeypatch.setattr(landing, "_read_once", read_while_written)
    with pytest.raises(StillBeingWritten, match="changed while it was read"):
        ingest_new(params, source, move=True)
    assert source.exists() and batch_files(params.path("incoming")) == []
    monkeypatch.undo()
    # Changed after the read, while it was judged: not deleted, nothing added.
    check = landing.check_file

    def check_while_written(path, params):
        with source.open("a") as handle:
            handle.write("even more,positive\n")
        return check(path, params)

    monkeypatch.setattr(landing, "check_file", check_while_written)
    with pytest.raises(StillBeingWritten, match="changed after it was read"):
        ingest_new(params, source, move=True)
    assert source.read_text().endswith("even more,positive\n") and batch_files(params.path("incoming")) == []


def test_files_over_the_bounds_are_rejected_before_they_are_read(make_params):
    params = make_params({"retrain": {"max_file_bytes": 5000, "max_file_rows": 10}})
    big = params.root / "big.csv"
    big.write_text(GOOD_ROWS * 8)
    receipt = ingest_new(params, big, move=False)  # someone else's file: judged where it is
    assert not receipt.accepted and "over retrain.max_file_bytes 5000" in receipt.reason
    assert big.exists() and not (params.root / receipt.moved_to).exists()  # not copied
    many = params.root / "many.parquet"
    pd.DataFrame({"text": [f"review {i} was fine" for i in range(50)], "label": "positive"}).to_parquet(many)
    receipt = ingest_new(params, many, move=True)
    assert not receipt.accepted and "50 rows (Parquet metadata), over retrain.max_file_rows 10" in receipt.reason
    rows = params.root / "rows.csv"
    rows.write_text(GOOD_ROWS)
    assert "20 rows, over retrain.max_file_rows 10" in ingest_new(params, rows, move=True).reason


def test_with_markers_a_file_waits_for_its_done_marker(tmp_path):
    from tasks.lib.data.watcher import LandingWatcher

    handled: list[str] = []

    def handle(path: Path) -> None:
        handled.append(path.name)
        path.rename(tmp_path / "taken.csv")

    landing = tmp_path / "landing"
    landing.mkdir()
    watcher = LandingWatcher(landing, handle, poll_seconds=0.01, settle_seconds=0, marker=True)
    (landing / "week.csv").write_text(GOOD_ROWS)
    watcher.poll_once()
    watcher.poll_once()
    assert handled == []  # complete only when the producer says so
    (landing / "week.csv.done").touch()
    watcher.poll_once()
    watcher.poll_once()
    assert handled == ["week.csv"] and not (landing / "week.csv.done").exists()


# Retention


def test_retention_keeps_the_newest_and_removes_what_is_old(make_params, onnx_folder, capsys):
    params = make_params(
        {
            "retention": {
                "archive": {"keep_last": 2, "max_age_days": 30},
                "rejected": {"keep_last": 1, "max_age_days": None},
                "registry_versions": {"keep_last": 1, "max_age_days": 30},
                "notification_lines": 3,
            }
        }
    )
    now = time.time()
    old = now - 40 * 86_400
    for i in range(4):  # two old, two recent
        folder = params.path("archive") / f"000{i}-batch"
        folder.mkdir(parents=True)
        os.utime(folder, (old if i < 2 else now,) * 2)
    for i in range(3):
        (params.path("rejected") / f"r{i}").mkdir(parents=True)
    registry = Registry(params.path("registry"))
    for name in "abcd":
        registry.set_production(registry.register(onnx_folder, {"model_md5": name}), name)
    registry.rollback("d is bad")  # production v0003; a rollback would restore v0002
    for version in registry.list_versions():
        os.utime(registry.versions / version / "version.json", (old, old))
    params.path("notifications").parent.mkdir(parents=True)
    params.path("notifications").write_text("".join(f'{{"n": {i}}}\n' for i in range(5)))

    assert main(["--root", str(params.root), "prune"]) == 0
    removed = json.loads(capsys.readouterr().out)
    assert removed["archive"] == ["landing/archive/0001-batch", "landing/archive/0000-batch"]
    assert removed["rejected"] == []  # no age limit: nothing goes
    # v0004 is the newest (kept), v0003 serves, v0002 is the rollback target: only v0001 goes.
    assert removed["registry_versions"] == ["v0001"] and registry.list_versions() == ["v0002", "v0003", "v0004"]
    assert registry.production_version() == "v0003" and registry.rollback("again") == ("v0003", "v0002")
    assert not any(e.get("version") == "v0001" for e in registry.events())
    assert removed["notification_lines"] == 2 and params.path("notifications").read_text().startswith('{"n": 2}')


def test_a_full_disk_during_registration_leaves_a_registry_that_still_works(make_params, onnx_folder, monkeypatch):
    import errno

    params = make_params()
    registry = registered(params, onnx_folder)
    real_open = Path.open

    class HalfThenFull:
        """The history file on a disk that fills up halfway through the next line."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_history(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        return HalfThenFull(handle) if self == registry.history else handle

    monkeypatch.setattr(Path, "open", open_history)
    before = registry.history.read_bytes()
    with pytest.raises(RegistryError, match=r"cannot write the event to .*history\.jsonl: No space left on device"):
        registry.register(onnx_folder, {"model_md5": "b"})
    monkeypatch.undo()
    assert registry.history.read_bytes() == before  # the half-written line was taken back
    assert registry.stages()["v0001"] == "production" and not registry.history_problems()
    registry.set_production("v0002", "the copy itself was complete")
    assert registry.production_version() == "v0002" and registry.rollback("back") == ("v0002", "v0001")
    assert main(["--root", str(params.root), "registry", "list"]) == 0


def test_a_landed_file_is_ingested_in_a_child_process_whose_death_the_watcher_survives(make_params, monkeypatch):
    import sys

    from tasks.apps import service
    from tasks.lib.data.watcher import LandingWatcher

    params = make_params()
    landing = params.path("landing")
    landing.mkdir(parents=True)
    (landing / "huge.csv").write_text(GOOD_ROWS)
    # What the out-of-memory killer does to a process that reads too much.
    monkeypatch.setattr(service, "INGEST_COMMAND", [sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    watcher = LandingWatcher(landing, lambda path: service.ingest_landed(params, path), 0.01, 0)
    watcher.poll_once()
    assert watcher.poll_once() == 0 and (landing / "huge.csv").exists()  # not retried until it changes
    (note,) = [json.loads(line) for line in params.path("notifications").read_text().splitlines()]
    assert note["event"] == "data.error" and "killed by signal 9 (out of memory?)" in note["title"]
    # A child that fails without moving the file (a full disk, a server it cannot reach) is reported too.
    monkeypatch.setattr(service, "INGEST_COMMAND", [sys.executable, "-c", "raise SystemExit(1)"])
    (landing / "huge.csv").write_text(GOOD_ROWS + "\n")
    watcher.poll_once()
    assert watcher.poll_once() == 0 and (landing / "huge.csv").exists()
    notes = [json.loads(line) for line in params.path("notifications").read_text().splitlines()]
    assert "the ingestion process failed (exit 1)" in notes[-1]["title"]
    monkeypatch.undo()
    (landing / "huge.csv").write_text(GOOD_ROWS + "one more review that was fine,positive\n")  # changed: tried again
    watcher.poll_once()
    watcher.poll_once()
    assert not (landing / "huge.csv").exists() and len(batch_files(params.path("incoming"))) == 1


def test_many_small_batches_are_merged_without_changing_rows_version_or_duplicate_checks(make_params):
    from tasks.lib.data.incoming import accepted_names, data_version

    params = make_params({"retrain": {"consolidate_after": 2}})
    incoming = params.path("incoming")
    for week in range(5):
        path = params.root / f"week{week}.csv"
        path.write_text("text,label\n" + "".join(f"week {week} review {i} was fine,positive\n" for i in range(3)))
        assert ingest_new(params, path, move=True).accepted
    files = batch_files(incoming)
    assert len(files) == 1 and files[0].name.startswith("b0005-")  # merged twice, numbered by its newest batch
    assert [name[:5] for name in accepted_names(incoming)] == ["b0001", "b0002", "b0003", "b0004", "b0005"]
    rows = read_batches(files)
    assert rows is not None and len(rows) == 15 and rows["row_id"].is_unique
    assert data_version(incoming).startswith("0005-")
    again = params.root / "again.csv"
    again.write_text("text,label\n" + "".join(f"week 0 review {i} was fine,positive\n" for i in range(3)))
    receipt = ingest_new(params, again, move=True)  # the same bytes as week0, merged long ago
    assert not receipt.accepted and "accepted before as batch b0001" in receipt.reason


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("HTTPStatusError: 403 for url 'https://hooks.slack.com/services/T0/B0/XyZsecret'", "XyZsecret"),
        ("https://user:pa55@example.com/x", "pa55"),
        ("GITHUB_TOKEN=ghp_abc123", "ghp_abc123"),
        ("client_secret=xyz789", "xyz789"),
        ('{"api_key": "k3y-value"}', "k3y-value"),
        ("Authorization: token s3cr3t", "s3cr3t"),
        ("Authorization: Bearer abcdefghij", "abcdefghij"),
    ],
)
def test_secrets_are_redacted(text, secret):
    from tasks.lib.reporting.redact import redact

    assert secret not in redact(text) and "[redacted]" in redact(text)
    assert (
        redact("Data Docs: file:///tmp/r/index.html, accuracy 0.91")
        == "Data Docs: file:///tmp/r/index.html, accuracy 0.91"
    )


def test_only_real_versions_of_the_registry_are_promoted_or_served(make_params, onnx_folder, tmp_path):
    from tasks.lib.storage.registry import RegistryError

    params = make_params()
    registry = registered(params, onnx_folder)
    for name in ("../x", "v0001\n", "/tmp"):
        with pytest.raises(RegistryError):
            registry.set_production(name, "a path, not a version")
    outside = tmp_path / "outside"
    shutil.copytree(registry.versions / "v0001", outside)
    (registry.versions / "v0002").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RegistryError, match="a link out of the registry"):
        registry.set_production("v0002", "a link")
    registry.pointer.write_text('{"version": "v0002"}')  # written by hand
    assert ProductionModel(registry.root).status()["status"] == "unavailable"
    # A record that does not vouch for the tokenizer is refused; one from before hashes is served, unverified.
    record = registry.versions / "v0001" / "version.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "files": {k: v for k, v in data["files"].items() if k != "tokenizer.json"}}))
    with pytest.raises(ModelLoadError, match=r"does not list \['tokenizer.json'\]"):
        load_classifier(registry.versions / "v0001")
    record.write_text(json.dumps({k: v for k, v in data.items() if k != "files"}))
    registry.pointer.write_text('{"version": "v0001"}')
    status = ProductionModel(registry.root).status()
    assert status["status"] == "ok" and status["verified"] is False


# A registry that repairs itself: a damaged pointer, changed files, a full file system.


@pytest.mark.parametrize(
    "pointer", ['{"version": "../../etc"}', '{"version": null}', "null", "{", '{"version": "v0099"}']
)
def test_a_damaged_pointer_is_listed_as_such_and_promote_or_rollback_replaces_it(
    make_params, onnx_folder, capsys, pointer
):
    params = make_params()
    registry = registered(params, onnx_folder)
    registry.set_production(registry.register(onnx_folder, {"model_md5": "b"}), "second")
    cli = ["--root", str(params.root), "registry"]
    registry.pointer.write_text(pointer)
    assert main([*cli, "list"]) == 0
    listed = capsys.readouterr()
    assert "v0001    archived" in listed.out and "v0002    archived" in listed.out  # none is production
    assert "production pointer damaged:" in listed.out and "registry promote VERSION" in listed.err
    assert main([*cli, "rollback", "--reason", "the pointer was damaged"]) == 0  # from v0002, the last production
    assert "rolled back v0002; v0001 is production" in capsys.readouterr().out
    assert registry.production_version() == "v0001" and registry.events()[-1]["replaced"].startswith("a damaged")
    assert registry.rolled_back("v0002") is not None  # as after any rollback: the pipeline does not promote it again
    registry.pointer.write_text(pointer)
    assert main([*cli, "promote", "v0002", "--reason", "repair"]) == 0
    assert "v0002 is production (was none: the pointer was damaged" in capsys.readouterr().out
    assert registry.production_version() == "v0002" and registry.pointer_problem() is None


def tamper(registry: Registry, version: str) -> tuple[Path, bytes]:
    """Invert a version's labels in its classifier.json; returns the file and its registered bytes."""
    info = registry.versions / version / "classifier.json"
    original = info.read_bytes()
    labels = json.loads(original)
    info.write_text(json.dumps({**labels, "labels": labels["labels"][::-1]}))
    return info, original


def test_promote_and_rollback_verify_the_files_of_their_target(make_params, onnx_folder, capsys):
    params = make_params()
    registry = registered(params, onnx_folder)
    for name in ("b", "c"):
        registry.set_production(registry.register(onnx_folder, {"model_md5": name}), name)
    candidate = registry.register(onnx_folder, {"model_md5": "d"})
    tamper(registry, candidate)
    cli = ["--root", str(params.root), "registry"]
    before = registry.history.read_bytes()
    assert main([*cli, "promote", candidate]) == 1
    assert "v0004: refusing to load: classifier.json differs from the registered file" in capsys.readouterr().err
    with pytest.raises(RegistryError, match=r"v0004: refusing to load: classifier\.json differs"):
        registry.promote(candidate, "tampered")
    assert registry.production_version() == "v0003" and registry.history.read_bytes() == before
    tamper(registry, "v0002")  # the nearest rollback target: passed over for the next that verifies
    with pytest.raises(RegistryError, match=r"classifier\.json differs"):
        registry.rollback("to a tampered one", to="v0002")
    assert main([*cli, "rollback", "--reason", "bad model"]) == 0
    assert "rolled back v0003; v0001 is production" in capsys.readouterr().out


def test_a_restart_while_production_is_tampered_serves_the_rollback_target_until_it_verifies(
    make_params, onnx_folder, caplog
):
    from fastapi.testclient import TestClient

    from tasks.apps.http_service import create_app
    from tests.support.waiting import wait_for

    params = make_params({"serve": {"reload_check_seconds": 0.05}})
    registry = registered(params, onnx_folder)
    for name in ("b", "c"):
        registry.set_production(registry.register(onnx_folder, {"model_md5": name}), name)
    production, original = tamper(registry, "v0003")
    tamper(registry, "v0002")  # the nearest previous production does not verify either: v0001 serves
    assert ProductionModel(registry.root).status()["status"] == "unavailable"  # `textclf predict` does not fall back
    model = ProductionModel(registry.root, retry=(0.05, 0.2), fall_back=True)  # as `textclf serve` loads it
    with caplog.at_level("WARNING"), TestClient(create_app(model, params.serve)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["version"] == "v0001" and health["fallback_for"] == "v0003"
        assert "production v0003 cannot be served; serving v0001 instead" in health["error"]
        assert "classifier.json differs" in health["error"]
        assert client.post("/predict", json={"texts": ["a fine film"]}).json()["version"] == "v0001"
        metrics = client.get("/metrics").text
        assert 'textclf_model_fallback{production="v0003",serving="v0001"} 1.0' in metrics
        assert "textclf_model_degraded 1.0" in metrics
        assert any("serving v0001 instead" in record.getMessage() for record in caplog.records)
        production.write_bytes(original)  # production verifies again: it serves, without a restart
        assert wait_for(lambda: client.get("/health").json()["version"] == "v0003")
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["fallback_for"] is None
        assert "textclf_model_degraded 0.0" in client.get("/metrics").text


@pytest.fixture
def full_file_system(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB file system (tmpfs) for a registry; skipped where this user cannot mount one."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.decode()[:200]}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    import subprocess

    filler = folder / "filler"
    done = subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    assert b"No space left on device" in done.stderr, done.stderr
    return filler


def test_a_full_file_system_is_a_clear_error_that_leaves_no_partial_file(
    make_params, onnx_folder, full_file_system, capsys
):
    params = make_params({"paths": {"registry": str(full_file_system / "registry")}})
    registry = registered(params, onnx_folder)
    candidate = registry.register(onnx_folder, {"model_md5": "b"})
    filler = fill(full_file_system)
    before = {path: path.read_bytes() for path in (registry.pointer, registry.history)}
    listing = sorted(p.relative_to(registry.root) for p in registry.root.rglob("*"))

    with pytest.raises(RegistryError, match=r"cannot write the production pointer to .*production\.json: No space"):
        registry.promote(candidate, "on a full disk")
    assert main(["--root", str(params.root), "registry", "promote", candidate]) == 1
    err = capsys.readouterr().err
    assert "production.json: No space left on device (ENOSPC); free space there" in err and "Traceback" not in err
    with pytest.raises(RegistryError, match=r"cannot write version v0003 to .*versions/\.v0003\.tmp: No space"):
        registry.register(onnx_folder, {"model_md5": "c"})
    # Nothing changed, and nothing partial stays: no temporary pointer, no half-copied version.
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(p.relative_to(registry.root) for p in registry.root.rglob("*")) == listing

    filler.unlink()
    assert registry.promote(candidate, "space freed") == "v0001" and registry.production_version() == candidate
