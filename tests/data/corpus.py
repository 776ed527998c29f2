"""Broken inputs, generated: each kind of defect the reader or the validation suite must name.

Every case starts from the same good rows (the accepted dataset of the tests)
and adds one defect, so exactly one rule or reader error should fire.
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from typing import Any

from tests.support.repo import deep_merge

ADJECTIVES = ["great", "dull", "moving", "tedious", "clever", "clumsy", "warm", "cold", "sharp", "flat"]


def good_rows(count: int = 200, positive_share: float = 0.5, words: int = 0) -> list[tuple[str, str]]:
    """Distinct, plausible reviews with labels; lengths vary like real ones."""
    rows = []
    positives = round(count * positive_share)
    for i in range(count):
        label = "positive" if i < positives else "negative"
        filler = " ".join(["and the cast"] * (i % 7 + words))
        rows.append((f"a {ADJECTIVES[i % 10]} film, review {i} {filler}".strip(), label))
    return rows


def csv_bytes(rows: list[tuple[str, str]], header: str = "text,label", delimiter: str = ",") -> bytes:
    def quote(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n;') else value

    body = "".join(f"{quote(t)}{delimiter}{quote(label)}\n" for t, label in rows)
    return (header.replace(",", delimiter) + "\n" + body).encode("utf-8")


GOOD = good_rows()
LAST_GOOD_LINE = len(GOOD) + 1  # header is line 1
NEXT = LAST_GOOD_LINE + 1  # the line a defect appended after the good rows is on
# Every row rule stops the run, so each row defect is reported as a failure of its own rule.
STRICT = {
    "validate": {
        "rules": dict.fromkeys(
            (
                "text_present",
                "text_charset",
                "text_language",
                "text_length",
                "text_tokens",
                "label_in_set",
                "conflicting_labels",
                "split_leakage",
                "duplicate_exact",
                "duplicate_normalised",
            ),
            "fail",
        )
    }
}
RELAXED_DATASET = {
    "validate": {
        "rules": {
            "max_imbalance_ratio": "warn",
            "label_drift": "warn",
            "length_drift": "warn",
            "min_class_share": "warn",
        }
    }
}


@dataclass(frozen=True)
class Case:
    """One kind of broken input.

    Args:
        files: file name -> bytes, written into the workspace; `source` names what data.source points at.
        read_error: regex the reader's DataError must match (None: the reader succeeds).
        rule: the one rule that must fail validation (when the reader succeeds).
        line: the source line the failing row is on (row rules).
    """

    id: str
    files: dict[str, bytes]
    source: str = "broken.csv"
    read_error: str | None = None
    rule: str | None = None
    line: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def _with(row: tuple[str, str]) -> bytes:
    return csv_bytes([*GOOD, row])


def _jsonl(records: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")


def _dataset_case(id: str, rule: str, rows: list[tuple[str, str]], **validate: Any) -> Case:
    rules = {name: policy for name, policy in RELAXED_DATASET["validate"]["rules"].items() if name != rule}
    return Case(
        id,
        {"broken.csv": csv_bytes(rows)},
        rule=rule,
        overrides={"validate": {**validate, "rules": {**rules, rule: "fail"}}},
    )


good_utf8 = csv_bytes(GOOD)
PREDICTABLE = [(f"a wonderful, delightful film, review {i}", "positive") for i in range(100)] + [
    (f"an awful, boring film, review {i}", "negative") for i in range(100)
]
CASES = [
    # Reading: the file cannot be read as a table of texts and labels.
    Case(
        "non_utf8_bytes",
        {"broken.csv": good_utf8 + "caf\xe9 au lait,positive\n".encode("latin-1")},
        read_error=rf"broken\.csv:{NEXT}:4: not UTF-8: byte 0xE9",
    ),
    Case(
        "nul_byte",
        {"broken.csv": good_utf8 + b"a fine\x00 film,positive\n"},
        read_error=rf"broken\.csv:{NEXT}:7: NUL character",
    ),
    Case(
        "utf16_file",
        {"broken.csv": good_utf8.decode().encode("utf-16")},
        read_error=r"broken\.csv:1:1: UTF-16 byte-order mark",
    ),
    Case(
        "bom_mid_file",
        {"broken.csv": codecs.BOM_UTF8 + good_utf8 + codecs.BOM_UTF8 + b"text,label\n"},
        read_error=rf"broken\.csv:{NEXT}:1: byte-order mark inside the file",
    ),
    Case(
        "wrong_delimiter",
        {"broken.csv": csv_bytes(GOOD, delimiter=";")},
        read_error=r"broken\.csv:1: the header is one column 'text;label': the file looks semicolon-separated",
    ),
    Case(
        "ragged_row",
        {"broken.csv": good_utf8 + b"good, but long,positive\n"},
        read_error=rf"broken\.csv:{NEXT}: field 'label': 3 fields where the header has 2",
    ),
    Case(
        "short_row",
        {"broken.csv": good_utf8 + b"no label here\n"},
        read_error=rf"broken\.csv:{NEXT}: field 'label': 1 fields where the header has 2: no value for 'label'",
    ),
    Case(
        "unclosed_quote",
        {"broken.csv": good_utf8 + b'"an opened quote,positive\nmore,negative\n'},
        read_error=rf"broken\.csv:{NEXT}: a quoted field that starts in this row is never closed",
    ),
    Case("empty_file", {"broken.csv": b""}, read_error=r"broken\.csv: empty file"),
    Case("header_only", {"broken.csv": b"text,label\n"}, read_error=r"broken\.csv: no data rows"),
    Case(
        "misnamed_text_column",
        {"broken.csv": csv_bytes(GOOD, header="Text,label")},
        read_error=r"broken\.csv:1: no text column: .* did you mean 'Text'\?",
    ),
    Case(
        "missing_label_column",
        {"broken.csv": csv_bytes(GOOD, header="text,lable")},
        read_error=r"broken\.csv:1: no label column: .* did you mean 'lable'\?",
    ),
    Case(
        "jsonl_broken_line",
        {
            "broken.jsonl": _jsonl([{"text": t, "label": y} for t, y in GOOD[:3]])
            + b'{"text": "unterminated, "label": "positive"}\n'
        },
        source="broken.jsonl",
        read_error=r"broken\.jsonl:4:\d+: not valid JSON",
    ),
    Case(
        "jsonl_text_not_a_string",
        {
            "broken.jsonl": _jsonl(
                [{"text": t, "label": y} for t, y in GOOD[:3]] + [{"text": {"title": "x"}, "label": "positive"}]
            )
        },
        source="broken.jsonl",
        read_error=r"broken\.jsonl:4: field 'text': expected text or a number, found dict",
    ),
    # Rows: readable, but unfit to train on.
    Case("empty_text", {"broken.csv": _with(("   ", "positive"))}, rule="text_present", line=NEXT),
    Case("invisible_text", {"broken.csv": _with(("\u200b\u200b", "negative"))}, rule="text_present", line=NEXT),
    Case(
        "bidi_isolates_only", {"broken.csv": _with(("\u2066\u2069\u2067", "negative"))}, rule="text_present", line=NEXT
    ),
    Case("hangul_filler_only", {"broken.csv": _with(("\u3164\u3164", "positive"))}, rule="text_present", line=NEXT),
    Case(
        "tag_characters_only",
        {"broken.csv": _with(("\U000e0041\U000e0042", "positive"))},
        rule="text_present",
        line=NEXT,
    ),
    Case("price_as_text", {"broken.csv": _with(("$12.99", "positive"))}, rule="text_language", line=NEXT),
    Case(
        "url_as_text",
        {"broken.csv": _with(("https://shop.example/p/123", "negative"))},
        rule="text_language",
        line=NEXT,
    ),
    Case(
        "uuid_as_text",
        {"broken.csv": _with(("550e8400-e29b-41d4-a716-446655440000", "negative"))},
        rule="text_language",
        line=NEXT,
    ),
    Case("control_character", {"broken.csv": _with(("a bell \x07 rings", "positive"))}, rule="text_charset", line=NEXT),
    Case(
        "replacement_character",
        {"broken.csv": _with(("caf\ufffd was fine", "positive"))},
        rule="text_charset",
        line=NEXT,
    ),
    Case("too_many_characters", {"broken.csv": _with(("good " * 410, "positive"))}, rule="text_length", line=NEXT),
    Case("too_many_tokens", {"broken.csv": _with(("a " * 600, "negative"))}, rule="text_tokens", line=NEXT),
    Case("label_outside_set", {"broken.csv": _with(("a neither film", "neutral"))}, rule="label_in_set", line=NEXT),
    Case("numeric_label_without_map", {"broken.csv": _with(("a fine film", "1"))}, rule="label_in_set", line=NEXT),
    Case("conflicting_labels", {"broken.csv": _with((GOOD[0][0], "negative"))}, rule="conflicting_labels", line=NEXT),
    Case("exact_duplicate", {"broken.csv": _with(GOOD[5])}, rule="duplicate_exact", line=NEXT),
    Case(
        "normalised_duplicate",
        {"broken.csv": _with((GOOD[5][0].upper().replace(" ", "  "), GOOD[5][1]))},
        rule="duplicate_normalised",
        line=NEXT,
    ),
    Case(
        "split_leakage",
        {"splits/train.csv": csv_bytes([*GOOD[:150], GOOD[160]]), "splits/test.csv": csv_bytes(GOOD[150:])},
        source="splits",
        rule="split_leakage",
        line=len(GOOD[:150]) + 2,
    ),
    # A label a model that never saw the row contradicts, among rows whose labels follow their words.
    Case(
        "label_noise",
        {"broken.csv": csv_bytes([*PREDICTABLE, ("a wonderful, delightful film, review 999", "negative")])},
        rule="label_noise",
        line=len(PREDICTABLE) + 2,
        overrides={"validate": {"rules": {**RELAXED_DATASET["validate"]["rules"], "label_noise": "fail"}}},
    ),
    # Dataset: every row is fine; the table is not.
    _dataset_case("too_few_rows", "min_rows", GOOD, min_rows=500),
    _dataset_case("rare_class", "min_class_share", good_rows(200, positive_share=0.97)),
    _dataset_case("class_imbalance", "max_imbalance_ratio", good_rows(200, positive_share=0.93), min_class_share=0.01),
    _dataset_case("label_drift", "label_drift", good_rows(200, positive_share=0.7)),
    _dataset_case("length_drift", "length_drift", good_rows(200, words=6)),
]


# Token classification: sentences of tagged words, each with a person, an organisation, a place
# and a miscellaneous entity (IOB2), distinct by their number.
PEOPLE = ["Anna Berg", "Tom Hale", "Ines Lund", "Omar Sy", "Lea Wu"]
ORGANISATIONS = ["Acme Corp", "Nordbank", "Blue Line", "Vega Labs"]
PLACES = ["Paris", "Oslo", "Lima", "Kyoto", "Accra", "Quito"]
EVENTS = ["Olympic", "Nobel", "Davos"]


def _tagged(phrase: str, kind: str) -> list[tuple[str, str]]:
    words = phrase.split(" ")
    return [(word, f"{'B' if i == 0 else 'I'}-{kind}") for i, word in enumerate(words)]


def good_sentences(count: int = 200) -> list[list[tuple[str, str]]]:
    """Distinct sentences of (word, tag), one entity of each type in each."""
    return [
        [
            *_tagged(PEOPLE[i % 5], "PER"),
            ("met", "O"),
            *_tagged(ORGANISATIONS[i % 4], "ORG"),
            ("staff", "O"),
            ("in", "O"),
            *_tagged(PLACES[i % 6], "LOC"),
            ("before", "O"),
            ("the", "O"),
            *_tagged(EVENTS[i % 3], "MISC"),
            ("talks", "O"),
            (",", "O"),
            ("report", "O"),
            (str(i), "O"),
        ]
        for i in range(count)
    ]


def conll_bytes(sentences: list[list[tuple[str, str]]]) -> bytes:
    """A CoNLL file: `word tag` per line, a blank line after each sentence."""
    return "".join("".join(f"{word} {tag}\n" for word, tag in sentence) + "\n" for sentence in sentences).encode()


def first_lines(sentences: list[list[tuple[str, str]]]) -> list[int]:
    """The line of each sentence's first word in `conll_bytes(sentences)`."""
    lines, line = [], 1
    for sentence in sentences:
        lines.append(line)
        line += len(sentence) + 1
    return lines


SENTENCES = good_sentences()
AFTER = first_lines([*SENTENCES, []])[-1]  # the line a sentence appended after the good ones starts on
NER = {
    "task": "token_classification",
    "data": {"labels": ["PER", "ORG", "LOC", "MISC"]},
    # The accepted dataset the corpus starts from holds reviews: drift against it is not the point.
    "validate": {
        "rules": {
            "tags_aligned": "fail",
            "tags_in_set": "fail",
            "tags_iob": "fail",
            **RELAXED_DATASET["validate"]["rules"],
        }
    },
}


def _ner(id: str, files: dict[str, bytes], source: str = "broken.conll", overrides: Any = None, **case: Any) -> Case:
    return Case(id, files, source=source, overrides=deep_merge(NER, overrides or {}), **case)


def _ner_with(sentence: list[tuple[str, str]]) -> bytes:
    return conll_bytes([*SENTENCES, sentence])


def _sentence_records(sentences: list[list[tuple[str, str]]]) -> list[dict[str, list[str]]]:
    return [{"tokens": [w for w, _ in s], "tags": [t for _, t in s]} for s in sentences]


NER_CASES = [
    _ner(
        "ner_missing_tag_column",
        {"broken.conll": conll_bytes(SENTENCES) + b"Oslo\n"},
        read_error=rf"broken\.conll:{AFTER}: 1 white-space separated columns",
    ),
    _ner(
        "ner_token_with_space",
        {"broken.jsonl": _jsonl([*_sentence_records(SENTENCES), {"tokens": ["New York"], "tags": ["B-LOC"]}])},
        source="broken.jsonl",
        read_error=rf"broken\.jsonl:{len(SENTENCES) + 1}: field 'tokens': token 1 'New York' holds white space",
    ),
    _ner(
        "ner_misaligned_tags",
        {"broken.jsonl": _jsonl([*_sentence_records(SENTENCES), {"tokens": ["Oslo", "rain"], "tags": ["B-LOC"]}])},
        source="broken.jsonl",
        rule="tags_aligned",
        line=len(SENTENCES) + 1,
    ),
    _ner(
        "ner_unknown_tag",
        {"broken.conll": _ner_with([("Oslo", "B-CITY"), ("rain", "O")])},
        rule="tags_in_set",
        line=AFTER,
    ),
    _ner("ner_broken_iob", {"broken.conll": _ner_with([("in", "O"), ("Oslo", "I-LOC")])}, rule="tags_iob", line=AFTER),
    _ner(
        "ner_empty_sentence",
        {"broken.jsonl": _jsonl([*_sentence_records(SENTENCES), {"tokens": [], "tags": []}])},
        source="broken.jsonl",
        rule="text_present",
        line=len(SENTENCES) + 1,
        overrides={"validate": {"rules": {"text_length": "warn"}}},  # 0 characters: text_length finds it too
    ),
    _ner(
        "ner_control_character", {"broken.conll": _ner_with([("Oslo\x07", "B-LOC")])}, rule="text_charset", line=AFTER
    ),
    _ner(
        "ner_sentence_too_long",
        {"broken.conll": _ner_with([("Oslo", "B-LOC")] + [("rain", "O")] * 60)},
        rule="text_tokens",
        line=AFTER,
        overrides={"validate": {"max_tokens": 50}},
    ),
    _ner(
        "ner_conflicting_tags",
        {"broken.conll": _ner_with([(word, "O") for word, _ in SENTENCES[0]])},
        rule="conflicting_labels",
        line=AFTER,
    ),
    _ner("ner_duplicate_sentence", {"broken.conll": _ner_with(SENTENCES[3])}, rule="duplicate_exact", line=AFTER),
    _ner(
        "ner_split_leakage",
        {
            "ner/train.conll": conll_bytes([*SENTENCES[:150], SENTENCES[160]]),
            "ner/test.conll": conll_bytes(SENTENCES[150:]),
        },
        source="ner",
        rule="split_leakage",
        line=first_lines([*SENTENCES[:150], SENTENCES[160]])[-1],
    ),
    _ner(
        "ner_rare_entity_type",
        {
            "broken.conll": conll_bytes(
                [[(w, "O" if t.endswith("MISC") else t) for w, t in s] if i > 5 else s for i, s in enumerate(SENTENCES)]
            )
        },
        rule="min_class_share",
        overrides={"validate": {"rules": {"min_class_share": "fail"}}},
    ),
]
