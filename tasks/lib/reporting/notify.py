"""Telling a person that an unattended run needs them: a log file always, a Prefect notification block if set.

The log file (`paths.notifications`, one JSON object per line) works offline
and is what a monitoring agent tails. `retrain.notify_block` names any Prefect
notification block (Slack, Teams, e-mail, a custom webhook, ...), created once
with `prefect block create` or in the UI; a delivery failure is logged and
recorded in the file, never raised: the run's own outcome is what counts.
Every record and log line is redacted first (tasks.lib.reporting.redact): a webhook
that answers 403 must not leave its token in the log.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from tasks.lib.config import Params
from tasks.lib.reporting.redact import redact
from tasks.lib.storage.retention import notifications_lock

log = logging.getLogger(__name__)


def notify(params: Params, event: str, title: str, body: str) -> dict[str, object]:
    """Record and send one notification.

    Args:
        event: what happened, for machines (`pipeline.failed`, `data.rejected`, ...).
        title: one line for people.
        body: the details (a gate report, a validation report).
    Returns:
        The record written to the log file.
    """
    record: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(),
        "event": event,
        "workspace": str(params.root),
        "title": _clean(title),
        "body": _clean(body),
    }
    block = params.retrain.notify_block
    if block:
        record["sent_to"] = block
        try:
            _send(block, title, body)
        except Exception as exc:  # noqa: BLE001 - any transport error: the file still has it
            record["delivery_error"] = _clean(f"{type(exc).__name__}: {exc}")
            log.warning("notification block %s failed: %s", block, record["delivery_error"])
    path = params.path("notifications")
    path.parent.mkdir(parents=True, exist_ok=True)
    with notifications_lock(path), path.open("a", encoding="utf-8") as handle:  # retention rewrites it
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return record


def _clean(text: str) -> str:
    """Redacted, and writable as UTF-8 (a file name's undecodable bytes shown as escapes)."""
    return redact(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def _send(block: str, title: str, body: str) -> None:
    from prefect.blocks.core import Block

    loaded: Any = Block.load(block)  # a notification block (the name says which kind)
    loaded.notify(body=body, subject=title)
