"""A registered version's model card: `README.md` in the Hugging Face format, from its lineage record.

YAML metadata (base model, language and licence read from the base model's own card,
the data with its DVC hashes, the metrics in `model-index` form), then sections a
person reads: intended use, training data, training settings, evaluation with
intervals and slices, the gate's decision, limitations and the serving variant.
Every figure comes from the typed records promote registers; nothing is typed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tasks.lib.artifacts import Lineage, is_openvino

CARD_FILE = "README.md"


def base_model_metadata(folder: Path) -> dict[str, Any]:
    """The YAML front matter of a base model's README.md (language, license...), or {}."""
    readme = folder / CARD_FILE
    if not readme.is_file():
        return {}
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    try:
        loaded = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _figure(value: Any) -> str:
    # 4 significant digits: 0.9582 and 5e-05 both read right.
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


# The headline metrics of each task (metrics/evaluate.json's names) and their Hugging Face metric types.
_HEADLINE = {
    "sequence_classification": {
        "accuracy": "accuracy",
        "macro_f1": "f1",
        "weighted_f1": "f1",
        "ece": "ece",
        "roc_auc": "roc_auc",
    },
    "token_classification": {
        "f1": "f1",
        "precision": "precision",
        "recall": "recall",
        "accuracy": "accuracy",
        "ece": "ece",
    },
}


def _tagger(lineage: Lineage) -> bool:
    return lineage.params.get("task") == "token_classification"


def metadata(version: str, lineage: Lineage, base: dict[str, Any]) -> dict[str, Any]:
    """The card's YAML header."""
    train = lineage.params.get("train", {})
    evaluate = lineage.metrics.evaluate
    task = "token-classification" if _tagger(lineage) else "text-classification"
    names = _HEADLINE[lineage.params.get("task", "sequence_classification")]
    return {
        "base_model": train.get("base_model"),
        "language": base.get("language", "unknown"),
        "license": base.get("license", "unknown"),
        "library_name": "openvino" if is_openvino(lineage.model_file) else "onnxruntime",
        "pipeline_tag": task,
        "tags": ["textclf", lineage.variant],
        "datasets": [lineage.data.source],
        "dataset_hashes": {
            "data_version": lineage.data.version,
            "raw_md5": lineage.data.raw_md5,
            "validated_md5": lineage.data.validated_md5,
            "train_md5": lineage.data.train_md5,
            "test_md5": lineage.data.test_md5,
        },
        "model-index": [
            {
                "name": f"textclf-{version}",
                "results": [
                    {
                        "task": {"type": task},
                        "dataset": {"name": lineage.data.source, "type": lineage.data.source, "split": "test"},
                        "metrics": [
                            {"type": kind, "name": name, "value": evaluate[name]}
                            for name, kind in names.items()
                            if evaluate.get(name) is not None
                        ],
                    }
                ],
            }
        ],
    }


def render(version: str, lineage: Lineage, base: dict[str, Any]) -> str:
    """The whole card: YAML header, then Markdown."""
    params, metrics = lineage.params, lineage.metrics
    data, train, evaluate = params.get("data", {}), params.get("train", {}), metrics.evaluate
    interval = evaluate.get("interval", {})
    confidence = interval.get("confidence", 0.95)
    tagger = _tagger(lineage)
    kinds = ", ".join(data.get("labels", []))
    purpose = f"to find the named entities of types {kinds} in text" if tagger else f"to label texts as {kinds}"
    lines = ["---", yaml.safe_dump(metadata(version, lineage, base), sort_keys=False).rstrip(), "---", ""]
    lines += [
        f"# textclf {version}",
        "",
        f"A {train.get('base_model')} encoder fine-tuned {purpose}, "
        f"served as the `{lineage.variant}` graph (`{lineage.model_file}`). Built from commit "
        f"`{lineage.git_commit}`.",
        "",
        "## Intended use",
        "",
        (
            f"Finding entities of types {data.get('labels')} in sentences like those of `{lineage.data.source}`. "
            if tagger
            else f"Classifying short texts like those of `{lineage.data.source}` into {data.get('labels')}. "
        )
        + "Not for texts in other languages or domains than its training data, nor for decisions about "
        "people without review: its errors are measured below, on data like its training data only.",
        "",
        "## Training data",
        "",
        f"- source: `{lineage.data.source}`; data version `{lineage.data.version}` "
        f"({lineage.data.batches or 0} accepted batches of new data)",
        f"- DVC hashes: raw `{lineage.data.raw_md5}`, validated `{lineage.data.validated_md5}`, "
        f"train `{lineage.data.train_md5}`, test `{lineage.data.test_md5}`",
        f"- label map: {data.get('label_map') or 'none'}",
    ]
    run = metrics.train or {}
    lines += [
        "",
        "## Training settings",
        "",
        "| setting | value |",
        "|---|---|",
        *(
            f"| {key} | {_figure(train.get(key))} |"
            for key in (
                "base_model",
                "max_length",
                "epochs",
                "learning_rate",
                "lr_scheduler",
                "warmup_ratio",
                "weight_decay",
                "dropout",
                "batch_size",
                "gradient_accumulation_steps",
                "seed",
            )
            if key in train
        ),
        f"| Parameter-efficient tuning | {train.get('peft', 'full')} |",
        *(
            f"| {key.replace('_', ' ')} (measured) | {_figure(run[key])} |"
            for key in ("train_rows", "steps", "epochs_run", "best_val_accuracy", "device", "precision")
            if key in run
        ),
        "",
        f"## Evaluation (test split, {evaluate.get('n')} {'sentences' if tagger else 'rows'}, "
        f"{confidence:.0%} bootstrap intervals{', entities by exact span' if tagger else ''})",
        "",
        "| metric | value | interval |",
        "|---|---|---|",
    ]
    for name in _HEADLINE[lineage.params.get("task", "sequence_classification")]:
        if evaluate.get(name) is not None:
            low_high = interval.get(name)
            shown = f"{low_high[0]:.4f} - {low_high[1]:.4f}" if low_high else ""
            lines.append(f"| {name} | {evaluate[name]:.4f} | {shown} |")
    per_class = evaluate.get("per_type" if tagger else "per_class") or {}
    if per_class:
        lines += [
            "",
            f"| {'type' if tagger else 'class'} | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |"
            for label, m in per_class.items()
        ]
    slices = {name: s for name, s in (evaluate.get("slices") or {}).items() if s.get("n")}
    if slices and tagger:
        lines += ["", "| slice | sentences | precision | recall | F1 |", "|---|---|---|---|---|"]
        lines += [
            f"| {name} | {s['n']} | " + " | ".join(_figure(s.get(m)) for m in ("precision", "recall", "f1")) + " |"
            for name, s in slices.items()
        ]
    elif slices:
        lines += ["", "| slice | rows | accuracy | macro-F1 |", "|---|---|---|---|"]
        lines += [
            f"| {name} | {s['n']} | {_figure(s.get('accuracy'))} | {_figure(s.get('macro_f1'))} |"
            for name, s in slices.items()
        ]
    gate = metrics.gate
    lines += [
        "",
        f"## The gate's decision: {'passed' if gate.passed else 'refused'}",
        "",
        f"Compared with production `{gate.production_version or 'none (first model)'}`."
        + (
            f" The label set changed: {lineage.label_set_change.describe()}, allowed by "
            "`gate.label_set_change: allow` (change thresholds not judged)."
            if lineage.label_set_change
            else ""
        ),
        "",
        "| rule | value | threshold | margin | status |",
        "|---|---|---|---|---|",
        *(
            f"| {rule.name} | {_figure(rule.value)} | {rule.kind} {rule.threshold:g} | {_figure(rule.margin)} | "
            f"{rule.status} |"
            for rule in gate.rules
        ),
    ]
    speed = metrics.quantize.get("models", {}).get(lineage.variant, {})
    lines += [
        "",
        "## Limitations",
        "",
        f"- Measured on {evaluate.get('n')} test rows from the same source as the training data; the "
        "intervals above are what that sample allows. Drift in live inputs is not covered by these figures.",
        (
            f"- Sentences are cut at {train.get('max_length')} subword tokens; words past that are tagged O. "
            "Raw text is split into words as Penn Treebank (and CoNLL-2003) tokenised it."
            if tagger
            else f"- Texts are cut at {train.get('max_length')} tokens; longer texts are judged on their beginning."
        ),
        f"- {'Entity types' if tagger else 'Labels'} outside the set above cannot be produced.",
        "",
        "## Serving",
        "",
        f"`{lineage.variant}` (`{lineage.model_file}`), chosen by the gate among the variants that passed"
        + (f"; registered with {sorted(lineage.serving_variants)}" if lineage.serving_variants else "")
        + ".",
    ]
    if speed:
        lines += [
            "",
            "| batch-1 p50 | rows/s at batch | size | agreement with PyTorch "
            f"(batch{', entity spans' if tagger else ''}) | runs in |",
            "|---|---|---|---|---|",
            f"| {speed.get('p50_ms', 0):.2f} ms | {speed.get('batch_per_s', 0):.0f} | "
            f"{speed.get('size_bytes', 0) / 1e6:.1f} MB | "
            f"{(speed.get('agreement_batch') or {}).get('span_agreement' if tagger else 'label_agreement') or 0:.4f} | "
            f"{speed.get('engine') or 'n/a'} |",
        ]
    return "\n".join(lines) + "\n"
