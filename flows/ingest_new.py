"""The `ingest-new-data` flow: one new file checked, added as a batch (or rejected), and announced.

An accepted file posts the Prefect event `textclf.data.accepted` about this
workspace; the `on-new-data` deployment's trigger (prefect.yaml) turns a burst
of them into one pipeline run. A rejected file ends the flow run Failed and
raises a notification; the pipeline does not run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.events import Event
from prefect.runtime import flow_run

from tasks.lib.config import Params, load_params
from tasks.lib.data.landing import NotStored, Receipt, ingest_new, summary_line
from tasks.lib.errors import PipelineError
from tasks.lib.reporting.notify import notify
from tasks.lib.storage.team_workspace import workspace_identity

DATA_ACCEPTED = "textclf.data.accepted"


class FileRejected(PipelineError, ValueError):
    """The file did not join the dataset; the message says why and where it and its report are."""


class NotAnnounced(PipelineError, RuntimeError):
    """The file joined the dataset, but the event that triggers retraining could not be sent."""


def announce(params: Params, receipt: Receipt) -> None:
    """Post `textclf.data.accepted` for this workspace, with the receipt as payload.

    Posted over HTTP and confirmed, not with `emit_event`: that is fire-and-forget
    over a websocket, which here once held an event back for a minute (the
    debounce window) and would lose it silently; a lost event is a missed retraining.
    Raises:
        prefect.exceptions.PrefectHTTPStatusError, httpx.HTTPError: the server did not take it.
    """
    event = Event(
        event=DATA_ACCEPTED,
        resource={
            "prefect.resource.id": workspace_identity(params.root),
            "prefect.resource.name": params.root.name,
            "textclf.workspace.path": str(params.root),
        },
        payload=receipt.as_dict(),
    )
    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[event.model_dump(mode="json")]).raise_for_status()


def _notify_despite_full_disk(params: Params, event: str, title: str) -> None:
    """`notify`, or where its log file is on the full disk too, the message on stderr (the service logs it)."""
    body = "Free space on that file system; the file is read again when it changes or with `textclf ingest-new`."
    try:
        notify(params, event, title, body)
    except OSError as exc:
        print(f"error: could not record the notification either ({exc.strerror}): {title}", file=sys.stderr)


def _run_name() -> str:
    return "ingest " + Path(str(flow_run.parameters.get("file", "?"))).name


@flow(name="ingest-new-data", flow_run_name=_run_name, log_prints=True)
def ingest_new_data(file: str, root: str = ".", move: bool = True) -> dict[str, Any]:
    """Check `file` on its own; accepted: add it to the dataset, archive it, post the event.

    Args:
        move: move the file (landing folder) rather than copy it.
    Returns:
        The receipt (batch, rows, data version, where the original went).
    Raises:
        FileRejected: the file is unreadable, failed a `fail` row rule, or was accepted before.
        NotStored: its copy, batch or receipt could not be written (a full disk; notified); it stays in place.
        NotAnnounced: accepted, but the event could not be posted (notified; the schedule picks it up).
    """
    params = load_params(root)
    try:
        receipt = ingest_new(params, Path(file), move)
    except NotStored as exc:  # a full disk: the file stays where it landed, and a person must make room
        _notify_despite_full_disk(params, "data.not_stored", str(exc))
        raise
    line = summary_line(receipt)
    get_run_logger().info(line)
    if not receipt.accepted:
        report = (params.root / receipt.moved_to).parent / "report.md"
        text = report.read_text(encoding="utf-8")
        create_markdown_artifact(key="rejected-data", markdown=text, description=line)
        notify(params, "data.rejected", line, text)
        raise FileRejected(f"{line}\n\n{text}")
    try:
        announce(params, receipt)
    except Exception as exc:  # the server is down or refused it: the data is in, the trigger is not
        title = f"{line}; but the retraining trigger could not be sent ({type(exc).__name__}: {exc})"
        notify(params, "data.not_announced", title, "The next scheduled run trains on it, or run `textclf run`.")
        raise NotAnnounced(title) from exc
    return receipt.as_dict()
