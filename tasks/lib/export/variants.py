"""Serving variants built from the exported model: the fp32 graph, dynamic or static int8 (ONNX
Runtime's quantizer, or NNCF's with SmoothQuant), fp16, OpenVINO's format, or the PyTorch model
structurally pruned and exported anew (the quantize stage builds those `quantize.variants` names,
then measures them: tasks/lib/export/variant_measurement.py).
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tasks.lib.artifacts import (
    GRAPH_FILES,
    MODEL_FILE,
    variant_file,
)
from tasks.lib.config import (
    DynamicInt8Variant,
    Fp16Variant,
    Fp32Variant,
    NncfInt8Variant,
    OpenVinoVariant,
    PrunedVariant,
    StaticInt8Variant,
    Variant,
)
from tasks.lib.errors import PipelineError
from tasks.lib.export.onnx_export import export_model, load_for_export
from tasks.lib.export.pruning import importance, prune
from tasks.lib.inference.onnx_classifier import OPENVINO_PRECISION_KEY, BatchEncoder, ClassifierInfo, import_openvino

log = logging.getLogger(__name__)


class QuantizationError(PipelineError, RuntimeError):
    """A variant could not be built; the message names it and says why."""


def nodes_matching(graph_file: Path, patterns: Sequence[str]) -> list[str]:
    """The names of the graph's nodes that any of `patterns` (regular expressions, `re.search`) finds; a
    pattern that finds none is an error, so a misspelt one cannot quantize what it meant to keep in float."""
    import onnx

    if not patterns:  # the usual case: no need to read the graph
        return []
    names = [node.name for node in onnx.load(str(graph_file), load_external_data=False).graph.node]
    for pattern in patterns:
        if not any(re.search(pattern, name) for name in names):
            matmuls = [name for name in names if name.endswith("MatMul")][:3]
            raise QuantizationError(f"keep_float: {pattern!r} finds no node of {graph_file.name} (e.g. {matmuls})")
    return [name for name in names if any(re.search(pattern, name) for pattern in patterns)]


def _quantize_dynamic(source: Path, target: Path, variant: DynamicInt8Variant) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Fused contrib ops (Attention, BiasGelu) have no ONNX shape inference: their
    # outputs are float tensors, which is what DefaultTensorType tells the quantizer.
    quantize_dynamic(
        source,
        target,
        weight_type=QuantType.QInt8,
        per_channel=variant.per_channel,
        op_types_to_quantize=variant.op_types,
        nodes_to_exclude=nodes_matching(source, variant.keep_float),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def calibration_feeds(folder: Path, texts: Sequence[Any], input_names: set[str]) -> list[dict[str, np.ndarray]]:
    """One feed per text (or sentence), all padded to the longest: histogram calibrators need equal shapes."""
    encoder = BatchEncoder(folder, input_names)
    ((_, padded),) = encoder.batches(texts, len(texts))
    return [{name: array[i : i + 1] for name, array in padded.items()} for i in range(len(texts))]


def _quantize_static(source: Path, target: Path, variant: StaticInt8Variant, calibration: Sequence[Any]) -> None:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise QuantizationError("static int8 needs calibration rows, and the validation split is empty")
    names = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}
    feeds = calibration_feeds(source.parent, calibration, names)

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.remaining = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.remaining, None)

    prepared = target.with_suffix(".pre.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    try:
        # uint8 activations with int8 weights: the combination ORT's x86 kernels run fastest.
        quantize_static(
            prepared,
            target,
            Feeds(),
            quant_format=QuantFormat.QDQ,
            per_channel=variant.per_channel,
            op_types_to_quantize=variant.op_types,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[variant.method],
            nodes_to_exclude=nodes_matching(prepared, variant.keep_float),
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        prepared.unlink(missing_ok=True)


def import_nncf() -> ModuleType:
    """`nncf`, imported without its usage telemetry: like OpenVINO (`import_openvino`), it posts events
    through `openvino_telemetry` unless that cannot be imported."""
    if "nncf" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"
    import nncf

    return nncf


def _quantize_nncf(source: Path, target: Path, variant: NncfInt8Variant, calibration: Sequence[Any]) -> None:
    import onnx

    if not calibration:
        raise QuantizationError("nncf int8 needs calibration rows, and the validation split is empty")
    nncf = import_nncf()
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    model = onnx.load(str(source))
    names = {i.name for i in model.graph.input}
    encoder = BatchEncoder(source.parent, names)
    # One unpadded text per feed: NNCF collects statistics per tensor, whatever the shapes.
    feeds = [feed for _, feed in encoder.batches(calibration, 1)]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(feeds),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(feeds),
        ignored_scope=nncf.IgnoredScope(names=nodes_matching(source, variant.keep_float)),
        advanced_parameters=AdvancedQuantizationParameters(
            smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=variant.smooth_quant_alpha)
        ),
    )
    onnx.save(_activations_as_uint8(quantized), str(target))


def _activations_as_uint8(model: Any) -> Any:
    """NNCF's int8 activations (QuantizeLinear into DequantizeLinear, int8 zero point) as uint8.

    The same numbers: uint8 = int8 + 128, with the zero point moved by 128. ONNX Runtime's x86 int8
    MatMul kernels take uint8 activations; it converts an int8 pair itself only where a
    QuantizeLinear feeds one node, so the query, key and value projections (one input, three
    consumers) stayed float MatMuls that dequantized their weights on every call: 68 ms at batch 1
    against 20 ms converted, MPNet-base on CoNLL-2003 (docs/guides/variants.md#measured-on-conll-2003).
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    converted = set()
    for quantize in graph.node:
        if (
            quantize.op_type != "QuantizeLinear"
            or quantize.input[0] in initializers
            or len(quantize.input) < 3
            or quantize.input[2] not in initializers
        ):
            continue
        zero_point = numpy_helper.to_array(initializers[quantize.input[2]])
        readers = consumers.get(quantize.output[0], [])
        if (
            zero_point.dtype != np.int8
            or not readers
            or not all(node.op_type == "DequantizeLinear" and node.input[2:] == quantize.input[2:] for node in readers)
        ):
            continue
        name = f"{quantize.input[2]}_uint8"
        if name not in initializers:
            shifted = (zero_point.astype(np.int16) + 128).astype(np.uint8)
            initializers[name] = numpy_helper.from_array(shifted, name)
            graph.initializer.append(initializers[name])
        for node in (quantize, *readers):
            node.input[2] = name
        converted.add(quantize.output[0])
    for info in graph.value_info:
        if info.name in converted:
            info.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    # The int8 zero points no node reads any more (ONNX Runtime warns about each when it loads).
    read = {name for node in graph.node for name in node.input}
    unread = [tensor for tensor in graph.initializer if tensor.name not in read]
    for tensor in unread:
        graph.initializer.remove(tensor)
    return model


def _to_fp16(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    # keep_io_types: callers feed int64 ids and read fp32 logits, whatever the variant.
    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def _to_openvino(source: Path, target: Path, variant: OpenVinoVariant) -> None:
    ov = import_openvino()
    model = ov.Core().read_model(source)
    # The precision travels with the model: a serving host computes in what the gate measured.
    model.set_rt_info(variant.precision, OPENVINO_PRECISION_KEY)
    # bf16 computes with 8 mantissa bits: weights kept as fp16 (11) lose nothing of that, at half the size.
    ov.save_model(model, target, compress_to_fp16=variant.precision == "bf16")


def _prune(model_dir: Path, onnx_dir: Path, target: Path, variant: PrunedVariant, calibration: Sequence[Any]) -> None:
    import onnx
    from transformers import AutoTokenizer

    info = ClassifierInfo.load(onnx_dir)
    opset = next(o.version for o in onnx.load(str(onnx_dir / MODEL_FILE)).opset_import if o.domain in ("", "ai.onnx"))
    model, tokenizer = load_for_export(model_dir, info.task), AutoTokenizer.from_pretrained(model_dir)
    texts = calibration[: variant.calibration_rows]
    heads, neurons = importance(model, tokenizer, texts, info.task, 16, info.max_length)
    units = prune(model, heads, neurons, variant.heads, variant.neurons)
    log.info(f"quantize: pruned {model_dir.name}: {units.summary()}")
    fp32 = target.with_name(f"{target.stem}.fp32.onnx")
    try:
        export_model(model, tokenizer, fp32 if variant.int8 else target, opset, info.task)
        if variant.int8:
            int8 = DynamicInt8Variant(kind="dynamic_int8", graph="exported", per_channel=True, op_types=None)
            _quantize_dynamic(fp32, target, int8)
    finally:
        fp32.unlink(missing_ok=True)


def build_variant(
    name: str,
    variant: Variant,
    onnx_dir: Path,
    target_dir: Path,
    calibration: Sequence[Any],
    model_dir: Path | None = None,
) -> Path:
    """Write the variant's graph (artifacts.variant_file) into `target_dir` from the exported or optimised
    graph, or for a pruned variant from the PyTorch model in `model_dir`; returns its path."""
    source, target = onnx_dir / GRAPH_FILES[variant.graph], target_dir / variant_file(name, variant.runtime)
    try:
        if isinstance(variant, Fp32Variant):
            shutil.copy(source, target)
        elif isinstance(variant, DynamicInt8Variant):
            _quantize_dynamic(source, target, variant)
        elif isinstance(variant, StaticInt8Variant):
            _quantize_static(source, target, variant, calibration[: variant.calibration_rows])
        elif isinstance(variant, NncfInt8Variant):
            _quantize_nncf(source, target, variant, calibration[: variant.calibration_rows])
        elif isinstance(variant, Fp16Variant):
            _to_fp16(source, target)
        elif isinstance(variant, OpenVinoVariant):
            _to_openvino(source, target, variant)
        elif isinstance(variant, PrunedVariant):
            if model_dir is None:
                raise QuantizationError(f"quantize.variants.{name}: a pruned variant is built from the PyTorch model")
            _prune(model_dir, onnx_dir, target, variant, calibration)
    except QuantizationError:
        raise
    except Exception as exc:  # ORT's quantizer raises bare RuntimeError/ValueError/KeyError
        raise QuantizationError(
            f"quantize.variants.{name} ({variant.kind} of {source.name}): {type(exc).__name__}: {exc}"
        ) from exc
    return target
