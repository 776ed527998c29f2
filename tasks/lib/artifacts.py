"""What one stage writes and a later one reads: every file name, and a typed record per JSON file.

A producer builds the record and calls `write`; a consumer calls `read` and
gets attributes, not string keys. A file that does not parse is an error that
names the file and the field. The JSON layout is what `dvc metrics show` and
the registry's lineage records have always shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tasks.lib.config import PYTORCH_BASELINE, Params
from tasks.lib.errors import PipelineError
from tasks.lib.io import read_json, write_json

# Files of a model folder (models/onnx, models/quantized, a registry version).
MODEL_FILE = "model.onnx"  # the graph as exported
OPTIMIZED_FILE = "model.opt.onnx"  # with ONNX Runtime's transformer fusions
GRAPH_FILES = {"exported": MODEL_FILE, "optimized": OPTIMIZED_FILE}
TOKENIZER_FILE = "tokenizer.json"
CLASSIFIER_FILE = "classifier.json"  # label names and maximum sequence length
VERSION_FILE = "version.json"  # a registry version's lineage record
# Markdown reports under `paths.reports` (also parts of the Prefect run report).
VALIDATION_REPORT_FILE = "validation.md"
QUANTIZE_REPORT_FILE = "quantize.md"
GATE_REPORT_FILE = "gate.md"


# An OpenVINO graph's suffix; every other graph is ONNX, run by ONNX Runtime.
OPENVINO_SUFFIX = ".xml"


def is_openvino(file: str) -> bool:
    return file.endswith(OPENVINO_SUFFIX)


def variant_file(name: str, runtime: str = "onnxruntime") -> str:
    """The graph file of serving variant `name` in the quantized folder; its suffix names the runtime:
    `.onnx` for ONNX Runtime, `.xml` (with its weights in `.bin`) for OpenVINO."""
    return f"model.{name}{OPENVINO_SUFFIX}" if runtime == "openvino" else f"model.{name}.onnx"


def graph_files(file: str) -> list[str]:
    """Every file a graph is stored in: an OpenVINO `.xml` keeps its weights in the `.bin` beside it."""
    return [file, file.removesuffix(OPENVINO_SUFFIX) + ".bin"] if is_openvino(file) else [file]


class ArtifactError(PipelineError, ValueError):
    """A stage's output is missing or does not have the shape its readers expect."""


class Record(BaseModel):
    """A JSON record between stages; unknown keys are kept (written by a newer version)."""

    model_config = ConfigDict(extra="allow")

    def dump(self) -> dict[str, Any]:
        # Fields a producer did not set (PyTorch's file, production's figures before there is
        # production) stay out of the file, as they always have.
        return self.model_dump(mode="json", exclude_unset=True)

    @classmethod
    def parse(cls, data: Any, where: Path | str) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ArtifactError(f"{where}: not a {cls.__name__} record ({problems})") from None

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.exists():
            raise ArtifactError(f"{path}: missing; run the stage that writes it first (dvc repro)")
        return cls.parse(read_json(path), path)


class StageRecord(Record):
    """A record with its own place: `folder` is a `paths` key, `file` the name in it."""

    folder: ClassVar[Literal["metrics", "reports"]] = "metrics"
    file: ClassVar[str]

    @classmethod
    def path(cls, params: Params) -> Path:
        return params.path(cls.folder) / cls.file

    @classmethod
    def read(cls, params: Params) -> Self:
        return cls.load(cls.path(params))

    def write(self, params: Params) -> None:
        write_json(self.path(params), self.dump())


class IngestMetrics(StageRecord):
    file: ClassVar[str] = "ingest.json"
    rows: int
    source_rows: int
    batches: int
    batch_rows: int
    data_version: str  # `NNNN-<digest>` of the accepted batches read


class ValidateMetrics(StageRecord):
    """The verdict (also per rule, in `rules`); the pipeline's run report reads the counts."""

    file: ClassVar[str] = "validate.json"
    passed: bool
    rows_read: int
    rows_kept: int
    rows_quarantined: int
    rows_warned: int
    failed_rules: list[str]
    rules: dict[str, dict[str, Any]]
    data_docs: str | None


class EvaluateMetrics(StageRecord):
    """The PyTorch candidate on the test split; per-class and per-slice figures ride along as extras."""

    file: ClassVar[str] = "evaluate.json"
    n: int
    accuracy: float | None
    macro_f1: float | None
    weighted_f1: float | None
    ece: float | None
    interval: dict[str, Any]  # "confidence" and metric -> [low, high]

    def accuracy_interval(self) -> tuple[float | None, float | None]:
        low, high = self.interval["accuracy"]
        return low, high


class EntityEvaluateMetrics(StageRecord):
    """A token classifier on the test split: entity-level scores (exact spans), word accuracy and
    calibration, per type and per slice."""

    file: ClassVar[str] = "evaluate.json"
    n: int  # sentences
    words: int
    words_cut: int  # past train.max_length subwords: predicted O
    f1: float
    precision: float
    recall: float
    accuracy: float  # of words
    ece: float  # of words' tag confidences
    interval: dict[str, Any]  # "confidence" and "f1" -> [low, high] (bootstrap over sentences)
    per_type: dict[str, dict[str, float]]
    slices: dict[str, dict[str, float]]


class Agreement(Record):
    """How closely one model's logits follow PyTorch's on the same rows."""

    label_agreement: float  # a tagger's: of words
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    # A tagger's: F1 of its entities with PyTorch's as gold (exact spans and types); None for a classifier.
    span_agreement: float | None = None


class GraphParity(Agreement):
    file: str
    size_bytes: int


class ExportMetrics(StageRecord):
    file: ClassVar[str] = "export.json"
    inputs: list[str]
    opset: int
    fused_ops: dict[str, int]
    exported: GraphParity
    optimized: GraphParity

    def graphs(self) -> dict[str, GraphParity]:
        return {"exported": self.exported, "optimized": self.optimized}


class ModelMeasurement(Record):
    """One model of the side-by-side measurement (PyTorch, or a serving variant with its `file`)."""

    p50_ms: float
    p95_ms: float
    batch_per_s: float
    speedup_b1: float
    speedup_batch: float
    size_bytes: int
    size_ratio: float
    accuracy_b1: float
    accuracy_batch: float
    accuracy_drop_b1: float
    accuracy_drop_batch: float
    # A tagger's entity F1 (exact spans), and PyTorch's minus it; None for a classifier.
    entity_f1_b1: float | None = None
    entity_f1_batch: float | None = None
    entity_f1_drop_b1: float | None = None
    entity_f1_drop_batch: float | None = None
    agreement_b1: Agreement
    agreement_batch: Agreement
    # Share of the batch-1 rows (a tagger's words) whose label changes when the row is scored inside a
    # batch instead: dynamic int8 scales activations per batch, so its answers follow the neighbours.
    batch_label_changes: float | None = None
    file: str | None = None  # None for the PyTorch baseline
    engine: str | None = None  # what ran it on the measuring host, e.g. "openvino 2026.4.1 bf16"


class QuantizeMetrics(StageRecord):
    file: ClassVar[str] = "quantize.json"
    rows: int
    latency_rows: int
    batch_size: int
    threads: int | None
    rounds: int
    models: dict[str, ModelMeasurement]  # PYTORCH_BASELINE first, then each variant

    def variants(self) -> dict[str, ModelMeasurement]:
        """The serving variants (every model but the PyTorch baseline)."""
        return {name: m for name, m in self.models.items() if name != PYTORCH_BASELINE}


class RuleResult(Record):
    name: str
    value: float | None
    threshold: float
    kind: Literal["min", "max"]
    interval: list[float] | None
    status: Literal["pass", "FAIL", "not judged"]
    skip: str | None
    margin: float | None


class VariantVerdict(Record):
    passed: bool
    rules: list[RuleResult]


class MetricChange(Record):
    candidate: float | None = None
    production: float | None = None
    change: float | None = None


class LabelSetChange(Record):
    """Production's labels against the candidate's."""

    previous: list[str]
    current: list[str]

    @property
    def added(self) -> list[str]:
        return [label for label in self.current if label not in self.previous]

    @property
    def removed(self) -> list[str]:
        return [label for label in self.previous if label not in self.current]

    def difference(self) -> str:
        """E.g. `added ['neutral'], removed ['pos']`."""
        parts = [f"added {self.added}" if self.added else "", f"removed {self.removed}" if self.removed else ""]
        return ", ".join(part for part in parts if part)

    def describe(self) -> str:
        return f"{self.previous} -> {self.current} ({self.difference()})"


def label_set_change(previous: Sequence[str], current: Sequence[str]) -> LabelSetChange | None:
    """The change from `previous` to `current`, or None when they hold the same labels (in any order)."""
    if set(previous) == set(current):
        return None
    return LabelSetChange(previous=list(previous), current=list(current))


class GateMetrics(StageRecord):
    file: ClassVar[str] = "gate.json"
    passed: bool
    serving_variant: str | None
    model_file: str | None
    production_version: str | None
    rules: list[RuleResult]
    variants: dict[str, VariantVerdict]
    overall: dict[str, MetricChange]  # metric -> both models and their change
    labels: list[str] = Field(default_factory=list)  # the candidate's (empty: a verdict from before labels)
    # Production's labels -> the candidate's, when they differ (allowed by gate.label_set_change).
    label_set_change: LabelSetChange | None = None


class GateScores(StageRecord):
    """Every metric of both models per scope (overall and each slice), with intervals; None before scoring."""

    folder: ClassVar[Literal["metrics", "reports"]] = "reports"
    file: ClassVar[str] = "gate_scores.json"
    scopes: dict[str, dict[str, Any]] | None

    def dump(self) -> Any:  # the file holds the mapping itself
        return self.scopes

    @classmethod
    def parse(cls, data: Any, where: Path | str) -> Self:
        return super().parse({"scopes": data}, where)


class DataLineage(Record):
    source: str
    version: str | None = None  # registries written before batches of new data had none
    batches: int | None = None
    raw_md5: str
    validated_md5: str
    train_md5: str
    test_md5: str


class LineageMetrics(Record):
    evaluate: dict[str, Any]
    quantize: dict[str, Any]
    gate: GateMetrics
    gate_scores: dict[str, dict[str, Any]] | None = None
    train: dict[str, Any] | None = None  # metrics/train.json; absent in versions registered before


class Lineage(Record):
    """What produced a registered model: written by promote into the version's `version.json`."""

    model_file: str
    variant: str
    # Every registered variant that passed the gate (name -> file), the chosen one
    # included: a serving host may pick another (serve.variant). Absent before.
    serving_variants: dict[str, str] = Field(default_factory=dict)
    model_md5: str
    data: DataLineage
    git_commit: str
    params: dict[str, Any]
    metrics: LineageMetrics
    # The labels it predicts, and production's before it when they differed (gate.label_set_change:
    # allow). Absent in versions registered before: their classifier.json holds the labels.
    labels: list[str] = Field(default_factory=list)
    label_set_change: LabelSetChange | None = None

    def test_accuracy(self) -> float | None:
        found = self.metrics.gate.overall.get("accuracy")
        return found.candidate if found else None


class VersionRecord(Lineage):
    """A registered version's `version.json`: the lineage plus the registry's own fields."""

    version: str
    created_at: str


class Promotion(StageRecord):
    folder: ClassVar[Literal["metrics", "reports"]] = "reports"
    file: ClassVar[str] = "promotion.json"
    promoted: bool
    version: str
    variant: str
    model_md5: str
    git_commit: str
    previous: str | None
    reason: str | None = None  # why it was not promoted
