"""Typed, validated view of params.yaml: the only place defaults live.

Every model forbids unknown keys and declares no defaults, so a typo or a
missing key in params.yaml fails loudly with the key's dotted name.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from tasks.lib.errors import ConfigError
from tasks.lib.io import is_url
from tasks.lib.metric_names import (
    PER_CLASS_METRICS,
    PER_TYPE_METRICS,
    SENTENCE_SLICES,
    entity_metric_names,
    metric_names,
)

PARAMS_FILE = "params.yaml"
# What quantize measures every variant against; no variant may take its name.
PYTORCH_BASELINE = "pytorch_fp32"
# What a flagged row does: stop the run, be set aside (kept in the quarantine
# file, dropped from the data), or only be reported.
RowPolicy = Literal["fail", "quarantine", "warn"]
# How a flagged row's text appears in reports: excerpt, hash or not at all.
ReportText = Literal["excerpt", "hash", "none"]
# Dataset rules judge the whole table: there is no row to set aside.
DatasetPolicy = Literal["fail", "warn"]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_str_list(value: object) -> object:
    """Accept one name or a list of names; labels may be written as numbers."""
    if isinstance(value, (str, int)):
        value = [value]
    if isinstance(value, list):
        return [str(v) if isinstance(v, (int, str)) else v for v in value]
    return value


StrList = Annotated[list[str], BeforeValidator(_as_str_list)]


class PathsConfig(_Section):
    raw: Path
    validated: Path
    quarantine: Path
    train_split: Path
    val_split: Path
    test_split: Path
    augmented: Path
    # The teacher model (stage `teacher`), and its logits for every augmented training row.
    teacher: Path
    teacher_logits: Path
    model: Path
    predictions: Path
    onnx: Path
    quantized: Path
    metrics: Path
    reports: Path
    # A folder, or an object-store URL (s3://bucket/prefix, gs://..., any fsspec backend) that
    # every host reads: docs/guides/team.md.
    registry: str
    cache: Path
    incoming: Path
    landing: Path
    archive: Path
    rejected: Path
    notifications: Path
    # The reference profile of the candidate (stage `reference`), registered with it.
    reference: Path
    # The monitoring flow's reports: one folder per run, and latest/.
    monitoring: Path
    # `textclf label pull`'s record of the Label Studio tasks it judged, and a note per pull
    # (default in code: a params.yaml written before it still loads).
    labelling: Path = Path("labelling")


class DemoConfig(_Section):
    rows: Annotated[int, Field(ge=20)]
    label_noise: Annotated[float, Field(ge=0.0, lt=0.5)]
    seed: int


class DataConfig(_Section):
    source: Annotated[str, Field(min_length=1)]
    text_column: Annotated[StrList, Field(min_length=1)]
    label_column: Annotated[str, Field(min_length=1)]
    labels: Annotated[StrList, Field(min_length=2)]
    # Source label -> one of `labels` (e.g. {0: negative, 1: positive}); others are kept as read.
    label_map: dict[str, str]
    # Headerless delimited files and spreadsheets: the column names, in order (None: the
    # first row is the header).
    columns: Annotated[StrList, Field(min_length=1)] | None
    # The delimiter of `.txt` files (None: sniffed among tab, comma, semicolon and pipe).
    sep: Literal["\t", ",", ";", "|"] | None
    # The sheet of `.xlsx` files (None: the first).
    sheet: Annotated[str, Field(min_length=1)] | None
    # What a compressed file or archive member may expand to (a zip bomb stops here).
    max_expanded_bytes: Annotated[int, Field(ge=1)]
    # Token classification: the word and tag columns of CoNLL files, and the tag scheme.
    word_field: int
    tag_field: int
    tag_scheme: Literal["iob2", "iob1"]
    demo: DemoConfig

    @field_validator("columns")
    @classmethod
    def _columns_unique(cls, columns: list[str] | None) -> list[str] | None:
        if columns is not None and len(set(columns)) != len(columns):
            raise ValueError(f"column names must be unique, got {columns}")
        return columns

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {labels}")
        return labels

    @field_validator("label_map", mode="before")
    @classmethod
    def _map_keys_as_text(cls, mapping: object) -> object:
        # YAML reads `0: negative` with an int key; source labels are text.
        if isinstance(mapping, dict):
            return {str(k): str(v) if isinstance(v, int) else v for k, v in mapping.items()}
        return mapping

    @model_validator(mode="after")
    def _map_targets_are_labels(self) -> DataConfig:
        unknown = sorted(set(self.label_map.values()) - set(self.labels))
        if unknown:
            raise ValueError(f"label_map maps to {unknown}, which are not in labels {self.labels}")
        return self


class RulesConfig(_Section):
    # Row rules, in the order a row is checked.
    text_present: RowPolicy
    text_charset: RowPolicy
    text_language: RowPolicy
    text_length: RowPolicy
    text_tokens: RowPolicy
    label_in_set: Literal["fail", "quarantine"]  # a label outside the set cannot be trained on
    # Token classification only (in place of label_in_set).
    tags_aligned: Literal["fail", "quarantine"]
    tags_in_set: Literal["fail", "quarantine"]
    tags_iob: Literal["fail", "quarantine", "warn", "repair"]
    conflicting_labels: RowPolicy
    split_leakage: RowPolicy
    duplicate_exact: RowPolicy
    duplicate_normalised: RowPolicy
    # Whole dataset only (not a batch on its own); off: not computed.
    label_noise: Literal["off", "fail", "quarantine", "warn"]
    # Dataset rules, on the rows that remain.
    min_rows: DatasetPolicy
    min_class_share: DatasetPolicy
    max_imbalance_ratio: DatasetPolicy
    label_drift: DatasetPolicy
    length_drift: DatasetPolicy


class DriftCheck(_Section):
    statistic: str
    threshold: Annotated[float, Field(gt=0.0)]


class LabelDrift(DriftCheck):
    statistic: Literal["linf", "js", "psi"]


class LengthDrift(DriftCheck):
    statistic: Literal["ks", "js", "psi"]


class DriftConfig(_Section):
    labels: LabelDrift
    length: LengthDrift


class LabelNoiseConfig(_Section):
    folds: Annotated[int, Field(ge=2, le=20)]
    repeats: Annotated[int, Field(ge=1, le=10)]
    max_label_probability: Annotated[float, Field(gt=0.0, lt=0.5)]
    max_rows: Annotated[int, Field(ge=100)]
    seed: int


class SparkConfig(_Section):
    master: Annotated[str, Field(min_length=1)]
    raw_url: str | None
    conf: dict[str, str]


class ValidateConfig(_Section):
    engine: Literal["pandas", "spark"]
    spark: SparkConfig
    min_chars: Annotated[int, Field(ge=1)]
    max_chars: Annotated[int, Field(ge=1)]
    min_tokens: Annotated[int, Field(ge=0)]
    max_tokens: Annotated[int, Field(ge=1)]
    report_text: ReportText
    min_rows: Annotated[int, Field(ge=1)]
    min_class_share: Fraction
    max_imbalance_ratio: Annotated[float, Field(ge=1.0)]
    drift: DriftConfig
    label_noise: LabelNoiseConfig
    rules: RulesConfig


class SplitConfig(_Section):
    val_fraction: Annotated[float, Field(gt=0.0, lt=0.5)]
    test_fraction: Annotated[float, Field(gt=0.0, lt=0.5)]
    seed: int
    max_train_rows: Annotated[int, Field(ge=10)] | None
    max_test_rows: Annotated[int, Field(ge=10)] | None


class SynonymConfig(_Section):
    ratio: Fraction
    variants: Annotated[int, Field(ge=1)]
    replace_fraction: Annotated[float, Field(gt=0.0, le=1.0)]
    protected_words: list[str]


class ApertiumConfig(_Section):
    pivot: Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]


class MarianConfig(_Section):
    forward: Annotated[str, Field(min_length=1)]
    backward: Annotated[str, Field(min_length=1)]
    num_beams: Annotated[int, Field(ge=1)]
    do_sample: bool
    top_p: Annotated[float, Field(gt=0.0, le=1.0)]
    temperature: Annotated[float, Field(gt=0.0)]
    max_new_tokens: Annotated[int, Field(ge=1)]


class BackTranslationConfig(_Section):
    ratio: Fraction
    engine: Literal["apertium", "marian"]
    batch_size: Annotated[int, Field(ge=1)]
    apertium: ApertiumConfig
    marian: MarianConfig


class AugmentFilterConfig(_Section):
    min_length_ratio: Annotated[float, Field(gt=0.0)]
    max_length_ratio: Annotated[float, Field(gt=0.0)]
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] | None
    similarity_model: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _ordered(self) -> AugmentFilterConfig:
        if self.min_length_ratio > self.max_length_ratio:
            raise ValueError("min_length_ratio is above max_length_ratio")
        return self


class MentionConfig(_Section):
    ratio: Fraction


class AugmentConfig(_Section):
    seed: int
    classes: Literal["share", "balance"]
    cache: bool
    synonym: SynonymConfig
    # Token classification only: entities replaced by other mentions of their type.
    mentions: MentionConfig
    backtranslation: BackTranslationConfig
    filters: AugmentFilterConfig


class LoraConfig(_Section):
    rank: Annotated[int, Field(ge=1)]
    alpha: Annotated[int, Field(gt=0)]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    target_modules: Annotated[list[str], Field(min_length=1)]


class Ia3Config(_Section):
    # Module names (peft matches the end of a module's name): scaled outputs, and those of them
    # whose inputs are scaled instead (the feed-forward layers).
    target_modules: Annotated[list[str], Field(min_length=1)]
    feedforward_modules: list[str]


class AdapterConfig(_Section):
    # Width of each bottleneck adapter (tasks/lib/training/bottleneck.py).
    size: Annotated[int, Field(ge=1)]
    # The linear layers adapters follow: a regular expression searched in module names.
    modules: Annotated[str, Field(min_length=1)]


class PrefixConfig(_Section):
    # Learned key and value positions added before every layer's attention.
    virtual_tokens: Annotated[int, Field(ge=1)]


class DistributedConfig(_Section):
    processes: Annotated[int, Field(ge=1)]


class AdversarialConfig(_Section):
    method: Literal["none", "fgm"]
    # Length (L2, over the batch) of the step added to the word embeddings.
    epsilon: Annotated[float, Field(gt=0.0)]


class DistillConfig(_Section):
    enabled: bool
    temperature: Annotated[float, Field(gt=0.0)]
    # Weight of the soft-label loss; the hard labels' loss weighs 1 - alpha.
    alpha: Fraction


class TrainConfig(_Section):
    base_model: Annotated[str, Field(min_length=1)]
    max_length: Annotated[int, Field(ge=8, le=4096)]
    epochs: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    gradient_accumulation_steps: Annotated[int, Field(ge=1)]
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)]
    lr_scheduler: Literal["linear", "cosine"]
    warmup_ratio: Fraction
    weight_decay: Annotated[float, Field(ge=0.0)]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    eval_steps: Annotated[int, Field(ge=1)] | None
    early_stopping_patience: Annotated[int, Field(ge=1)]
    precision: Literal["auto", "fp32"]
    oom_backoff: bool
    deterministic: bool
    seed: int
    peft: Literal["full", "lora", "ia3", "bitfit", "adapter", "prefix"]
    lora: LoraConfig
    ia3: Ia3Config
    adapter: AdapterConfig
    prefix: PrefixConfig
    # Keep this many of the base model's encoder layers (evenly spaced); null keeps them all.
    encoder_layers: Annotated[int, Field(ge=1)] | None
    distill: DistillConfig
    adversarial: AdversarialConfig
    distributed: DistributedConfig


class TeacherConfig(_Section):
    """The teacher's own training settings (`teacher`); the rest are `train`'s
    (docs/guides/training.md#distillation)."""

    base_model: Annotated[str, Field(min_length=1)]
    epochs: Annotated[int, Field(ge=1)]
    learning_rate: Annotated[float, Field(gt=0.0, lt=1.0)]
    batch_size: Annotated[int, Field(ge=1)]
    peft: Literal["full", "lora", "ia3", "bitfit", "adapter", "prefix"]


class SearchDimension(_Section):
    """One hyperparameter's range (`low`..`high`, on a log scale with `log`) or its `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: Annotated[list[float | int | str], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give low and high, or choices")
        if self.low is not None and self.high is not None:
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"a log scale needs low > 0 (it is {self.low})")
        return self


class PruningConfig(_Section):
    startup_trials: Annotated[int, Field(ge=0)]  # trials finished before any is pruned
    warmup_evaluations: Annotated[int, Field(ge=0)]  # a trial's validations before it may be pruned


class TuneConfig(_Section):
    trials: Annotated[int, Field(ge=1)]
    minutes: Annotated[float, Field(gt=0)]
    train_rows: Annotated[int, Field(ge=2)] | None
    seed: int
    pruning: PruningConfig
    space: Annotated[dict[str, SearchDimension], Field(min_length=1)]

    @model_validator(mode="after")
    def _space_names_train_settings(self) -> TuneConfig:
        tunable = {"learning_rate", "warmup_ratio", "weight_decay", "dropout", "batch_size", "epochs"}
        tunable |= {"gradient_accumulation_steps", "lr_scheduler", "max_length", "early_stopping_patience"}
        unknown = sorted(set(self.space) - tunable)
        if unknown:
            raise ValueError(f"space: {unknown} are not train settings a search can vary (those are {sorted(tunable)})")
        return self


class NamedSlice(_Section):
    """Test rows matching a regex (case-insensitive), or containing any of some whole words."""

    pattern: str | None = None
    keywords: Annotated[list[str], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> NamedSlice:
        if (self.pattern is None) == (self.keywords is None):
            raise ValueError("give exactly one of `pattern` or `keywords`")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regex: {exc}") from None
        return self


class SliceConfig(_Section):
    # Upper bounds (inclusive) of text-length buckets, in words, increasing.
    length_words: list[Annotated[int, Field(ge=1)]]
    named: dict[str, NamedSlice]
    # Slices with fewer test rows are reported but their gate rules are not judged.
    min_rows: Annotated[int, Field(ge=1)]

    @field_validator("length_words")
    @classmethod
    def _increasing(cls, edges: list[int]) -> list[int]:
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bucket bounds must increase (got {edges})")
        return edges

    def length_buckets(self) -> list[tuple[str, int, int | None]]:
        """(name, lowest, highest or None) word counts per bucket, e.g. ('words_1_10', 1, 10)."""
        lows = [1] + [edge + 1 for edge in self.length_words]
        highs: list[int | None] = [*self.length_words, None]
        return [
            (f"words_{low}_{high}" if high is not None else f"words_{low}_up", low, high)
            for low, high in zip(lows, highs, strict=True)
        ]

    def names(self) -> list[str]:
        return [name for name, _, _ in self.length_buckets()] + list(self.named)


class BootstrapConfig(_Section):
    resamples: Annotated[int, Field(ge=100)]
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)]
    seed: int


class EvaluateConfig(_Section):
    batch_size: Annotated[int, Field(ge=1)]
    calibration_bins: Annotated[int, Field(ge=2)]
    bootstrap: BootstrapConfig
    slices: SliceConfig


class ExportConfig(_Section):
    opset: Annotated[int, Field(ge=14, le=23)]
    batch_size: Annotated[int, Field(ge=1)]


class _Variant(_Section):
    # Which graph the variant starts from: the plain export, or the one with
    # ONNX Runtime's transformer fusions (Attention, SkipLayerNorm, BiasGelu).
    graph: Literal["exported", "optimized"]
    # The engine that runs it; decides the file (artifacts.variant_file).
    runtime: ClassVar[Literal["onnxruntime", "openvino"]] = "onnxruntime"


class Fp32Variant(_Variant):
    kind: Literal["fp32"]


class OpenVinoVariant(_Variant):
    """The graph converted to OpenVINO's format and run by OpenVINO's CPU plugin."""

    kind: Literal["openvino"]
    # bf16: computed in bfloat16 where the CPU does that natively (AMX,
    # AVX512_BF16), in f32 elsewhere; f32: always f32.
    precision: Literal["bf16", "f32"]
    runtime: ClassVar[Literal["onnxruntime", "openvino"]] = "openvino"

    @model_validator(mode="after")
    def _plain_graph(self) -> OpenVinoVariant:
        if self.graph != "exported":
            raise ValueError(
                "graph must be exported: OpenVINO cannot read ONNX Runtime's fused operators "
                "(com.microsoft Attention, SkipLayerNormalization) of the optimized graph"
            )
        return self


class DynamicInt8Variant(_Variant):
    """Weights int8 ahead of time, activations quantized per batch at run time."""

    kind: Literal["dynamic_int8"]
    per_channel: bool
    # Op types to quantize (e.g. [MatMul, Attention]); null: every type ORT can.
    op_types: list[str] | None
    # Nodes left in float: regular expressions searched in node names (e.g. the feed-forward
    # outputs, 'layer\.\d+/output/dense/MatMul$' in YAML's single quotes); [] quantizes every node of op_types.
    keep_float: list[str] = []


class StaticInt8Variant(_Variant):
    """QDQ graph with activation ranges calibrated on validation rows."""

    kind: Literal["static_int8"]
    per_channel: bool
    op_types: list[str] | None
    calibration_rows: Annotated[int, Field(ge=1)]
    method: Literal["minmax", "entropy", "percentile"]
    # Nodes left in float, as for dynamic_int8 (docs/guides/variants.md#static-int8).
    keep_float: list[str] = []


class NncfInt8Variant(_Variant):
    """Static int8 (QDQ) by NNCF's post-training quantization for transformers: SmoothQuant moves
    activation outliers into the weights, sensitive ops stay in float, biases are corrected."""

    kind: Literal["nncf_int8"]
    calibration_rows: Annotated[int, Field(ge=1)]
    # SmoothQuant's migration strength for MatMuls (0: off; NNCF's default for transformers 0.95).
    smooth_quant_alpha: Annotated[float, Field(ge=0, le=1)] = 0.95
    # Nodes left in float, as for dynamic_int8, beside those NNCF keeps for transformers.
    keep_float: list[str] = []

    @model_validator(mode="after")
    def _plain_graph(self) -> NncfInt8Variant:
        if self.graph != "exported":
            raise ValueError("graph must be exported: NNCF reads standard ONNX operators, not ORT's fused ones")
        return self


class Fp16Variant(_Variant):
    """Half-precision weights and activations (for CUDA; inputs and logits stay fp32)."""

    kind: Literal["fp16"]


class PrunedVariant(_Variant):
    """The PyTorch model with its least important attention heads and feed-forward neurons removed
    (importance on validation rows: tasks/lib/export/pruning.py), exported anew, then dynamic int8 (`int8`)."""

    kind: Literal["pruned"]
    heads: Fraction  # share of the attention heads removed
    neurons: Fraction  # share of the feed-forward neurons removed
    calibration_rows: Annotated[int, Field(ge=1)]
    int8: bool

    @model_validator(mode="after")
    def _plain_graph(self) -> PrunedVariant:
        if self.graph != "exported":
            raise ValueError(
                "graph must be exported: a pruned model's layers keep different numbers of heads, "
                "which ONNX Runtime's fused Attention (the optimized graph) cannot express"
            )
        return self


Variant = Annotated[
    Fp32Variant
    | DynamicInt8Variant
    | StaticInt8Variant
    | NncfInt8Variant
    | Fp16Variant
    | OpenVinoVariant
    | PrunedVariant,
    Field(discriminator="kind"),
]


class BenchmarkConfig(_Section):
    threads: Annotated[int, Field(ge=1)] | None
    batch_size: Annotated[int, Field(ge=1)]
    # Batch-1 latency (and batch-1 accuracy) on the first N test rows; null: all.
    latency_rows: Annotated[int, Field(ge=10)] | None
    warmup: Annotated[int, Field(ge=0)]
    # Measurements are taken in this many interleaved rounds (every model per
    # round), so that a slow spell of the machine hits all models alike.
    rounds: Annotated[int, Field(ge=1)]


class QuantizeConfig(_Section):
    variants: Annotated[dict[str, Variant], Field(min_length=1)]
    benchmark: BenchmarkConfig

    @field_validator("variants")
    @classmethod
    def _names_are_file_safe(cls, variants: dict[str, Variant]) -> dict[str, Variant]:
        for name in variants:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_]*", name):
                raise ValueError(f"variant name {name!r}: use lower-case letters, digits and _")
            if name == PYTORCH_BASELINE:
                raise ValueError(
                    f"variant name {name!r} is what the PyTorch baseline is called in the "
                    "measurement: give the variant another name"
                )
        return variants


class ServingRules(_Section):
    """What a serving variant must show against PyTorch to be promotable."""

    min_agreement: Fraction  # label agreement, at batch 1 and at batch size
    max_accuracy_drop: Fraction  # PyTorch accuracy minus the variant's, at both batch sizes
    max_entity_f1_drop: Fraction  # token classification: PyTorch's entity F1 minus the variant's, both sizes
    max_size_ratio: Annotated[float, Field(gt=0.0)] | None  # variant size / fp32 ONNX size
    # Share of rows whose label changes between batch 1 and a batch (0: answers that never depend on
    # a request's neighbours); null: not checked.
    max_batch_label_changes: Fraction | None = None
    # Floors on what is served, whatever PyTorch scored: the variant's accuracy (a tagger's entity F1)
    # on the whole test split at batch size; null: not checked.
    min_accuracy: Fraction | None = None
    min_entity_f1: Fraction | None = None
    # Among the variants that pass, promote the fastest by this measure.
    prefer: Literal["latency", "throughput"]


class Bounds(_Section):
    """A lower and/or an upper bound; a bound left out is not checked."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Bounds:
        if self.min is None and self.max is None:
            raise ValueError("give `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class ChangeBounds(Bounds):
    """Bounds on candidate minus production (relative: divided by production's value)."""

    relative: bool = False


class MetricRules(_Section):
    """Value thresholds on the candidate's metric and a change threshold against production."""

    min: float | None = None
    max: float | None = None
    change: ChangeBounds | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> MetricRules:
        if self.min is None and self.max is None and self.change is None:
            raise ValueError("give `min`, `max`, `change` or a combination")
        return self


class GateConfig(_Section):
    min_onnx_agreement: Fraction
    serving: ServingRules
    # `point`: a change threshold fails when the difference is beyond its bound;
    # `interval`: only when the whole bootstrap interval of the difference is
    # (worse, and by more than noise).
    change_test: Literal["point", "interval"]
    metrics: dict[str, MetricRules]
    # Slice name (from evaluate.slices, or "*" for every slice) -> metric -> rules.
    slices: dict[str, dict[str, MetricRules]]
    # A candidate whose labels differ from production's: `refuse` (the gate says what
    # changed and, for renamed labels, proposes a data.label_map) or `allow` (judged on
    # value thresholds only: production cannot predict the new classes).
    label_set_change: Literal["refuse", "allow"]


class PromoteConfig(_Section):
    # auto: a candidate that passes the gate becomes production; manual: it is
    # registered as a candidate and waits for `textclf registry promote VERSION`.
    mode: Literal["auto", "manual"]
    variants: Literal["passing", "chosen"]


class _FromEnvironment(BaseSettings):
    """A section a serving host may set without params.yaml: defaults here, the file's values over
    them, a `<prefix><KEY>` environment variable over both (`from_environment`), and a command's
    options over all (docs/guides/serving.md#settings). The defaults equal params.yaml's
    (tests/unit/test_serving_settings.py keeps them so).
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    @classmethod
    def from_environment(cls, file: BaseModel | None = None, **options: object) -> Self:
        """This section from `file`'s values (a params.yaml section: its keys of this class), the environment
        over them, `options` over all.

        Raises:
            pydantic.ValidationError: a value (from any of the three) is out of range.
        """
        from_env = cls()  # the defaults, and the variables that are set
        env = from_env.model_dump(include=from_env.model_fields_set)
        given = {key: value for key, value in options.items() if value is not None}
        values = file.model_dump(include=set(cls.model_fields)) if file else {}
        return cls(**{**values, **env, **given})


class ServeConfig(_FromEnvironment):
    model_config = SettingsConfigDict(env_prefix="TEXTCLF_SERVE_")

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    probe_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    max_texts: Annotated[int, Field(ge=1)] = 64
    max_chars: Annotated[int, Field(ge=1)] = 2000
    batch_size: Annotated[int, Field(ge=1)] = 32
    threads: Annotated[int, Field(ge=1)] | None = None
    reload_retry_seconds: Annotated[float, Field(gt=0)] = 1.0
    reload_retry_max_seconds: Annotated[float, Field(gt=0)] = 60.0
    reload_check_seconds: Annotated[float, Field(gt=0)] = 1.0
    max_batch: Annotated[int, Field(ge=1)] = 32
    max_wait_ms: Annotated[float, Field(ge=0)] = 2
    max_queue: Annotated[int, Field(ge=1)] = 256
    max_queue_ms: Annotated[float, Field(gt=0)] = 200
    header_timeout_seconds: Annotated[float, Field(gt=0)] = 10
    body_timeout_seconds: Annotated[float, Field(gt=0)] = 10
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 30
    drain_seconds: Annotated[float, Field(ge=0)] = 30
    release_idle_seconds: Annotated[float, Field(gt=0)] | None = 10
    access_log: bool = False
    variant: str = "gate"

    @model_validator(mode="after")
    def _a_request_fits_the_queue(self) -> ServeConfig:
        if self.max_texts > self.max_queue:
            raise ValueError(
                f"max_texts ({self.max_texts}) is over max_queue ({self.max_queue}): such a request never fits"
            )
        return self

    @property
    def max_body_bytes(self) -> int:
        """The largest body a valid request can have: every character JSON-escaped (12 bytes
        for a character outside the BMP), plus quotes, commas and the envelope."""
        return self.max_texts * (self.max_chars * 12 + 4) + 64


_CRON_FIELDS = re.compile(r"[\w*/,\-?]+(\s+[\w*/,\-?]+){4}")
_CRON_ALIAS = re.compile(r"@(hourly|daily|weekly|monthly|yearly|annually)")


def _cron_shape(cron: str) -> str:
    # The shape only: Prefect's parser checks the values when the deployment is built
    # (importing it here would slow every stage's start by a second).
    if not (_CRON_ALIAS.fullmatch(cron) or _CRON_FIELDS.fullmatch(cron.strip())):
        raise ValueError(
            "expected five cron fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 3 * * 1', or @hourly/@daily/@weekly/@monthly"
        )
    return cron


Cron = Annotated[str, AfterValidator(_cron_shape)]
# What a monitoring rule that fires does: a notification (and the report), the report only, or not computed.
MonitorPolicy = Literal["notify", "warn", "off"]


class MonitorRule(_Section):
    threshold: Annotated[float, Field(ge=0)]
    policy: MonitorPolicy


class StatisticRule(MonitorRule):
    statistic: Literal["linf", "js", "psi", "ks"]


class MonitorRules(_Section):
    length_drift: StatisticRule
    label_drift: StatisticRule
    confidence_shift: MonitorRule
    unknown_tokens: MonitorRule
    embedding_drift: MonitorRule
    live_accuracy: MonitorRule

    @model_validator(mode="after")
    def _statistics_fit(self) -> MonitorRules:
        if self.length_drift.statistic == "linf":
            raise ValueError("length_drift.statistic: linf compares class shares; use ks, js or psi")
        if self.label_drift.statistic == "ks":
            raise ValueError("label_drift.statistic: ks compares numbers; use linf, js or psi")
        return self


class PredictionLogConfig(_FromEnvironment):
    """The keys of `monitor:` that the server's prediction log reads (TEXTCLF_MONITOR_<KEY> on a serving host)."""

    model_config = SettingsConfigDict(env_prefix="TEXTCLF_MONITOR_")

    log: bool = True
    location: str | None = None
    log_text: bool = False
    flush_rows: Annotated[int, Field(ge=1)] = 5000
    flush_seconds: Annotated[float, Field(gt=0)] = 10
    max_pending: Annotated[int, Field(ge=1)] = 200000


class MonitorConfig(_Section):
    log: bool
    location: str | None
    log_text: bool
    flush_rows: Annotated[int, Field(ge=1)]
    flush_seconds: Annotated[float, Field(gt=0)]
    max_pending: Annotated[int, Field(ge=1)]
    cron: Cron
    window_hours: Annotated[float, Field(gt=0)]
    min_window: Annotated[int, Field(ge=1)]
    reference_rows: Annotated[int, Field(ge=10)]
    embedding_model: str | None
    unknown_heavy: Fraction
    min_feedback: Annotated[int, Field(ge=1)]
    review_drifted_share: Fraction
    pushgateway: str | None
    rules: MonitorRules


class WatchConfig(_Section):
    poll_seconds: Annotated[float, Field(gt=0)]
    settle_seconds: Annotated[float, Field(ge=0)]
    completion: Literal["settle", "marker"]
    ingest_timeout_seconds: Annotated[float, Field(gt=0)]


class RetrainConfig(_Section):
    cron: Cron
    timezone: str
    debounce_seconds: Annotated[int, Field(ge=0)]
    watch: WatchConfig
    max_file_bytes: Annotated[int, Field(ge=1)]
    max_file_rows: Annotated[int, Field(ge=1)]
    consolidate_after: Annotated[int, Field(ge=1)] | None
    # A Prefect notification block, "<block type slug>/<block name>" (None: the log file only).
    notify_block: str | None

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, timezone: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as UTC or Europe/Paris)") from None
        return timezone

    @field_validator("notify_block")
    @classmethod
    def _block_slug(cls, block: str | None) -> str | None:
        if block is not None and block.count("/") != 1:
            raise ValueError(f"expected '<block type slug>/<block name>', e.g. 'slack-webhook/ops' (got {block!r})")
        return block


class ScoreSchedule(_Section):
    """One scheduled run of deployment `score`: when, which table, where its answers go, which version."""

    cron: Cron
    input: Annotated[str, Field(min_length=1)]
    output: Annotated[str, Field(min_length=1)]
    version: Annotated[str, Field(min_length=1)] = "production"


class ScoreConfig(_Section):
    """How `textclf score` answers a table, and deployment `score`'s schedules."""

    # Defaults in code (params.yaml's, tested): a params.yaml written before `score:` existed still loads.
    # `auto`, `gate` or a registered variant's name, as serve.variant.
    variant: Annotated[str, Field(min_length=1)] = "auto"
    batch_size: Annotated[int, Field(ge=1)] = 32
    window: Annotated[int, Field(ge=1)] = 4096
    row_group_rows: Annotated[int, Field(ge=1)] = 65536
    threads: Annotated[int, Field(ge=1)] | None = None
    engine: Literal["local", "spark"] = "local"
    schedules: list[ScoreSchedule] = []

    @model_validator(mode="after")
    def _row_groups_hold_whole_windows(self) -> ScoreConfig:
        """A row group is the unit a resumed run keeps: its windows must be the ones a whole run makes."""
        if self.row_group_rows % self.window:
            raise ValueError(
                f"score.row_group_rows ({self.row_group_rows}) must be a multiple of score.window ({self.window})"
            )
        return self


class LabellingConfig(_Section):
    """Label Studio: the review queue pushed as tasks, finished labels pulled into paths.landing
    (docs/guides/labelling.md). The server's URL and token are never here: the environment or
    Prefect Secret blocks."""

    # Defaults in code (params.yaml's, tested): a params.yaml written before `labelling:` existed still loads.
    project: Annotated[str, Field(min_length=3)] = "textclf review queue"
    queue_size: Annotated[int, Field(ge=1)] = 100
    queue_days: Annotated[float, Field(gt=0)] | None = None
    sync_minutes: Annotated[float, Field(gt=0)] | None = None
    url_block: str | None = None
    token_block: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0


class Keep(_Section):
    keep_last: Annotated[int, Field(ge=1)]
    max_age_days: Annotated[float, Field(gt=0)] | None


class RetentionConfig(_Section):
    archive: Keep
    rejected: Keep
    registry_versions: Keep
    team_reports: Keep
    remote_runs: Keep
    notification_lines: Annotated[int, Field(ge=1)] | None


Task = Literal["sequence_classification", "token_classification"]


class Params(_Section):
    task: Task
    paths: PathsConfig
    data: DataConfig
    validate_: Annotated[ValidateConfig, Field(alias="validate")]
    split: SplitConfig
    augment: AugmentConfig
    train: TrainConfig
    teacher: TeacherConfig
    tune: TuneConfig
    evaluate: EvaluateConfig
    export: ExportConfig
    quantize: QuantizeConfig
    gate: GateConfig
    promote: PromoteConfig
    serve: ServeConfig
    monitor: MonitorConfig
    score: ScoreConfig = ScoreConfig()
    labelling: LabellingConfig = LabellingConfig()
    retrain: RetrainConfig
    retention: RetentionConfig

    # The repo root all relative paths are resolved against (not from the file).
    root: Annotated[Path, Field(exclude=True)] = Path(".")

    @model_validator(mode="after")
    def _label_map_renames_labels(self) -> Params:
        """data.label_map renames a row's whole label; a sentence's label is its tag sequence."""
        if self.task == "token_classification" and self.data.label_map:
            raise ValueError("data.label_map: with task token_classification, name the tags in the source files")
        return self

    @model_validator(mode="after")
    def _distillation_classifies_texts(self) -> Params:
        """Soft labels are one distribution per text; a tagger's would be one per word."""
        if self.task == "token_classification" and self.train.distill.enabled:
            raise ValueError("train.distill.enabled: distillation trains sequence classifiers only")
        return self

    @model_validator(mode="after")
    def _gate_names_exist(self) -> Params:
        """Every metric and slice a gate rule names is one that evaluation measures."""
        slices = self.evaluate.slices.names()
        if self.task == "token_classification":
            # evaluate.slices (texts by pattern) stay valid names, so the defaults load; a tagger is
            # scored on its sentence slices only.
            metrics, slices = entity_metric_names(self.data.labels), [*slices, *SENTENCE_SLICES]
            metrics += [f"{metric}.*" for metric in PER_TYPE_METRICS]  # every type (gate_rules.py expands it)
        else:
            metrics = metric_names(self.data.labels)
            metrics += [f"{metric}.*" for metric in PER_CLASS_METRICS]  # every class (gate_rules.py expands it)
        rules = [("gate.metrics", self.gate.metrics)]
        for name, by_metric in self.gate.slices.items():
            if name != "*" and name not in slices:
                raise ValueError(f"gate.slices.{name}: no such slice; evaluate.slices defines {slices} (or use '*')")
            rules.append((f"gate.slices.{name}", by_metric))
        for key, by_metric in rules:
            for metric in by_metric:
                if metric not in metrics:
                    raise ValueError(
                        f"{key}.{metric}: unknown metric; with labels {self.data.labels} the metrics are {metrics}"
                    )
        return self

    def path(self, name: str) -> Path:
        """Absolute path of the `paths.<name>` entry (a local one: see `location`)."""
        value = getattr(self.paths, name)
        if is_url(value):
            raise ConfigError(f"paths.{name} is a URL ({value}), not a local path")
        value = Path(value)
        return value if value.is_absolute() else self.root / value

    def location(self, name: str) -> Path | str:
        """`paths.<name>` as a URL when it is one (paths.registry may be), else its absolute path."""
        value = getattr(self.paths, name)
        return str(value) if is_url(value) else self.path(name)

    def with_registry(self, location: str | None) -> Params:
        """These params with paths.registry replaced by `location` (a command's --registry), when given."""
        if location is None:
            return self
        return self.model_copy(update={"paths": self.paths.model_copy(update={"registry": location})})


def _format_errors(error: ValidationError, file: Path) -> str:
    lines = [f"{file}: invalid parameters:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        if not key:  # a rule across sections: the message names its keys
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
        elif item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"  {key}: missing key")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def load_params(root: Path | str = ".", file: str = PARAMS_FILE) -> Params:
    """Load and validate `<root>/params.yaml`.

    Raises:
        ConfigError: the file is missing or unparsable, or a key is unknown,
            missing or has a bad value; the message names every such key.
    """
    root = Path(root).resolve()
    path = root / file
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    if "root" in raw:
        raise ConfigError(f"{path}: root: unknown key")
    try:
        return Params.model_validate({**raw, "root": root})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, path)) from None
