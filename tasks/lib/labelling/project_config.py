"""What a Label Studio project looks like for this task, and its answers in both directions.

A classifier's project asks one choice among `data.labels`; a tagger's asks spans labelled with
the entity types of `data.labels`, selected by whole words. A pre-annotation is the production
model's answer in Label Studio's result format; an annotation's result reads back as a label or
as entities (character offsets), which `tagged_words` turns into the project's words and tags.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any
from xml.sax.saxutils import quoteattr

from tasks.lib.config import Task

# The names of the project's controls (`from_name`) and of the text they label (`to_name`).
CONTROL, TEXT_OBJECT = "label", "text"


def label_config(task: Task, labels: list[str]) -> str:
    """The project's labelling configuration (Label Studio's XML) for `task` and `labels`."""
    options = "".join(
        f"<{'Label' if task == 'token_classification' else 'Choice'} value={quoteattr(x)}/>" for x in labels
    )
    if task == "token_classification":
        return (
            f'<View><Labels name="{CONTROL}" toName="{TEXT_OBJECT}">{options}</Labels>'
            f'<Text name="{TEXT_OBJECT}" value="$text" granularity="word"/>'
            '<Header value="$reason"/></View>'
        )
    return (
        f'<View><Text name="{TEXT_OBJECT}" value="$text"/>'
        f'<Choices name="{CONTROL}" toName="{TEXT_OBJECT}" choice="single" showInline="true">{options}</Choices>'
        '<Header value="$reason"/></View>'
    )


def choice_result(label: str) -> list[dict[str, Any]]:
    """A classifier's answer as a result: one choice."""
    return [{"from_name": CONTROL, "to_name": TEXT_OBJECT, "type": "choices", "value": {"choices": [label]}}]


def span_result(text: str, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tagger's entities (`start`, `end`, `type`) as a result: one labelled span each."""
    return [
        {
            "from_name": CONTROL,
            "to_name": TEXT_OBJECT,
            "type": "labels",
            "value": {"start": int(e["start"]), "end": int(e["end"]), "text": text[int(e["start"]) : int(e["end"])],
                      "labels": [str(e["type"])]},
        }
        for e in entities
    ]  # fmt: skip


class UnreadableAnswer(ValueError):
    """An annotation's result that is not one answer of this project's kind; the message says why."""


def chosen_label(result: list[dict[str, Any]]) -> str:
    """The one label a classifier's annotation chose.

    Raises:
        UnreadableAnswer: no choice, or more than one.
    """
    chosen = [c for item in result if item.get("type") == "choices" for c in item.get("value", {}).get("choices", [])]
    if len(chosen) != 1:
        raise UnreadableAnswer(f"{len(chosen)} choices made, one expected")
    return str(chosen[0])


def labelled_spans(text: str, result: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tagger's annotation as entities (`start`, `end`, `type`), in text order, white space trimmed
    off each span's ends (a drag that took a space still means the words).

    Raises:
        UnreadableAnswer: a span with no label or several, or spans that overlap.
    """
    entities: list[dict[str, Any]] = []
    for item in result:
        if item.get("type") != "labels":
            continue
        value = item.get("value", {})
        kinds = value.get("labels", [])
        start, end = int(value["start"]), int(value["end"])
        if len(kinds) != 1:
            raise UnreadableAnswer(f"span {start}-{end} {text[start:end]!r} has {len(kinds)} labels, one expected")
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        entities.append({"start": start, "end": end, "type": str(kinds[0])})
    entities.sort(key=lambda e: (e["start"], e["end"]))
    for before, after in pairwise(entities):
        if after["start"] < before["end"]:
            raise UnreadableAnswer(
                f"spans {before['start']}-{before['end']} and {after['start']}-{after['end']} overlap"
            )
    return entities
