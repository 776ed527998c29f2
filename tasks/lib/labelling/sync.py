"""`textclf label push` and `pull`: the review queue into Label Studio, finished labels into landing.

Push sends the review queue (tasks.lib.monitoring.review_queue) as tasks, each with the
production model's answer as a pre-annotation, the reason the text was chosen and its request
id. A task's key is the text's hash, so a text already in the project is not sent again.

Pull judges each task annotated since the last pull: one answer (agreeing annotations count
once) with labels of `data.labels` is used; a task only skipped, one whose annotations
disagree, one with a label outside `data.labels`, or one whose spans do not fall on words is
reported and not used. The used rows go into `paths.landing` as one labelled file (a CSV of text
and label; a tagger's JSON Lines of tokens and tags in `data.tag_scheme`), written under a
hidden name and renamed, so the landing watcher sees it whole and checks it like any file.
`paths.labelling/state.json` records each judged task: a used task is never sent again, a
reported one is judged again once its annotations change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel

from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import TAGS_FIELD, TOKENS_FIELD, iob2_to_iob1
from tasks.lib.errors import PipelineError
from tasks.lib.inference.onnx_tagger import tagged_words
from tasks.lib.io import read_json, write_json, write_text
from tasks.lib.labelling.label_studio import LabelStudio
from tasks.lib.labelling.project_config import (
    UnreadableAnswer,
    choice_result,
    chosen_label,
    label_config,
    labelled_spans,
    span_result,
)
from tasks.lib.monitoring.review_queue import review_queue

STATE_FILE = "state.json"
PULLS = "pulls"
TASK_COLUMN = "label_studio_task"
Outcome = Literal["used", "skipped", "conflicting", "unknown_label", "unreadable"]
PROBLEMS: tuple[Outcome, ...] = ("skipped", "conflicting", "unknown_label", "unreadable")


class LabellingError(PipelineError):
    """Nothing to push to or pull from; the message says why and what to do."""


class PushReport(BaseModel):
    project: int
    project_url: str
    queued: int
    added: int

    def summary(self) -> str:
        return (
            f"label push: {self.added} new tasks of {self.queued} queued texts "
            f"({self.queued - self.added} already in the project) -> {self.project_url}"
        )


class JudgedTask(BaseModel):
    """One task's outcome at a pull, and the annotations it was judged on."""

    task: int
    outcome: Outcome
    detail: str = ""
    signature: str
    edited: bool | None = None


class PullReport(BaseModel):
    project: int
    judged: list[JudgedTask]
    file: str | None

    def count(self, outcome: Outcome) -> int:
        return sum(t.outcome == outcome for t in self.judged)

    @property
    def edited(self) -> int:
        return sum(bool(t.edited) for t in self.judged if t.outcome == "used")

    def summary(self) -> str:
        used = self.count("used")
        problems = ", ".join(f"{self.count(p)} {p.replace('_', ' ')}" for p in PROBLEMS)
        where = f" into {self.file}" if self.file else ""
        return (
            f"label pull: {used} labelled texts{where} ({self.edited} edited, {used - self.edited} the model's "
            f"answer accepted); not used: {problems}"
        )

    def markdown(self) -> str:
        lines = [f"# Label Studio pull, project {self.project}", "", self.summary(), ""]
        reported = [t for t in self.judged if t.outcome != "used"]
        if reported:
            lines += ["| task | outcome | why |", "|---|---|---|"]
            lines += [f"| {t.task} | {t.outcome} | {t.detail} |" for t in reported]
        return "\n".join(lines) + "\n"


def project_of(params: Params, studio: LabelStudio, create: bool) -> dict[str, Any]:
    """The project named `labelling.project`, made (with data.labels) when `create` and missing."""
    title = params.labelling.project
    project = studio.project_titled(title)
    if project is not None:
        return project
    if not create:
        raise LabellingError(f"Label Studio at {studio.url} has no project '{title}': `textclf label push` makes it")
    description = f"Served texts to label, from textclf's review queue ({params.task}; docs/guides/labelling.md)"
    return studio.create_project(title, label_config(params.task, params.data.labels), description)


def task_of(params: Params, row: dict[str, Any]) -> dict[str, Any]:
    """A review-queue row as a Label Studio task: data, and the served answer as a pre-annotation."""
    text = str(row[TEXT])
    if params.task == "token_classification":
        result = span_result(text, json.loads(row["entities"]))
    else:
        result = choice_result(str(row["predicted"]))
    data = {
        "text": text,
        "key": str(row["text_hash"]),
        "reason": str(row["reason"]),
        "request_id": str(row["request_id"]),
        "index": int(row["index"]),
        "version": str(row["version"]),
        "confidence": round(float(row["confidence"]), 6),
    }
    prediction = {"model_version": str(row["version"]), "score": float(row["confidence"]), "result": result}
    return {"data": data, "predictions": [prediction]}


def push(params: Params, studio: LabelStudio, n: int | None = None, days: float | None = None) -> PushReport:
    """Send the review queue's `n` texts (default labelling.queue_size) not yet in the project."""
    queue = review_queue(params, n or params.labelling.queue_size, days or params.labelling.queue_days)
    project = project_of(params, studio, create=True)
    present = {str(task["data"].get("key")) for task in studio.tasks(int(project["id"]))}
    new = [task_of(params, row) for row in queue.to_dict("records") if str(row["text_hash"]) not in present]
    added = studio.import_tasks(int(project["id"]), new)
    return PushReport(
        project=int(project["id"]), project_url=f"{studio.url}/projects/{project['id']}", queued=len(queue), added=added
    )


def _signature(annotations: list[dict[str, Any]]) -> str:
    return ",".join(f"{a['id']}@{a.get('updated_at', '')}" for a in sorted(annotations, key=lambda a: int(a["id"])))


def _answer(params: Params, text: str, result: list[dict[str, Any]]) -> str | tuple[tuple[int, int, str], ...]:
    """An annotation's (or prediction's) answer, comparable with another's."""
    if params.task == "token_classification":
        return tuple((e["start"], e["end"], e["type"]) for e in labelled_spans(text, result))
    return chosen_label(result)


def judge(params: Params, task: dict[str, Any]) -> tuple[JudgedTask, dict[str, Any] | None]:
    """A task's outcome, and its labelled row when it is used."""
    annotations = task["annotations"]
    judged = {"task": int(task["id"]), "signature": _signature(annotations)}
    text = str(task["data"]["text"])
    done = [a for a in annotations if not a.get("was_cancelled")]
    if not done:
        return JudgedTask(**judged, outcome="skipped", detail="skipped by the annotator"), None
    try:
        answers = {_answer(params, text, a["result"]) for a in done}
    except UnreadableAnswer as exc:
        return JudgedTask(**judged, outcome="unreadable", detail=str(exc)), None
    if len(answers) > 1:
        shown = "; ".join(sorted(map(str, answers)))
        return JudgedTask(**judged, outcome="conflicting", detail=f"{len(done)} annotations disagree: {shown}"), None
    (answer,) = answers
    known = params.data.labels
    kinds = [kind for _, _, kind in answer] if isinstance(answer, tuple) else [answer]
    unknown = sorted(set(kinds) - set(known))
    if unknown:
        detail = f"label {', '.join(map(repr, unknown))} is not in data.labels {known}"
        return JudgedTask(**judged, outcome="unknown_label", detail=detail), None
    predictions = task.get("predictions") or []
    try:
        predicted = _answer(params, text, predictions[0]["result"]) if predictions else None
    except UnreadableAnswer:
        predicted = None
    extra = {TASK_COLUMN: int(task["id"]), "request_id": task["data"].get("request_id")}
    if isinstance(answer, tuple):
        try:
            tokens, tags = tagged_words(text, [{"start": s, "end": e, "type": k} for s, e, k in answer])
        except ValueError as exc:
            return JudgedTask(**judged, outcome="unreadable", detail=str(exc)), None
        if params.data.tag_scheme == "iob1":
            tags = iob2_to_iob1(tags)
        row: dict[str, Any] = {TOKENS_FIELD: tokens, TAGS_FIELD: tags, TEXT: text, **extra}
    else:
        row = {TEXT: text, LABEL: answer, **extra}
    return JudgedTask(**judged, outcome="used", edited=answer != predicted), row


def _judged_tasks(states: dict[str, Any], key: str) -> dict[int, JudgedTask]:
    """The tasks judged before in the project `key` names, from state.json's records."""
    return {int(task): JudgedTask.model_validate(record) for task, record in states.get(key, {}).items()}


def _landed_file(params: Params, project: int, rows: list[dict[str, Any]], stamp: str) -> Path:
    """The used rows as one file in paths.landing, appearing whole."""
    tagger = params.task == "token_classification"
    path = params.path("landing") / f"label-studio-{project}-{stamp}.{'jsonl' if tagger else 'csv'}"
    if tagger:
        content = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        content = pd.DataFrame(rows).to_csv(index=False)
    write_text(path, content)
    return path


def pull(params: Params, studio: LabelStudio) -> PullReport:
    """Judge the tasks annotated since the last pull; the used ones become one labelled file in landing."""
    project = int(project_of(params, studio, create=False)["id"])
    state_file = params.path("labelling") / STATE_FILE
    states: dict[str, Any] = read_json(state_file) if state_file.is_file() else {}
    key = f"{studio.url}/projects/{project}"
    state = _judged_tasks(states, key)
    judged, rows = [], []
    for task in studio.tasks(project):
        if not task.get("annotations"):
            continue
        before = state.get(int(task["id"]))
        if before is not None and (before.outcome == "used" or before.signature == _signature(task["annotations"])):
            continue
        outcome, row = judge(params, task)
        judged.append(outcome)
        if row is not None:
            rows.append(row)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    # The file first, then the record: a pull cut between the two sends those rows again, and the
    # duplicate rule (validate.rules.duplicate_exact) quarantines them; the other order could lose them.
    landed = _landed_file(params, project, rows, stamp) if rows else None
    report = PullReport(project=project, judged=judged, file=str(landed.relative_to(params.root)) if landed else None)
    if judged:
        state |= {task.task: task for task in judged}
        states[key] = {str(task): record.model_dump() for task, record in sorted(state.items())}
        write_json(state_file, states)
        write_text(params.path("labelling") / PULLS / f"{stamp}.md", report.markdown())
    return report
