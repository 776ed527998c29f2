"""Stage `quantize`: ONNX Runtime dynamic int8 quantization, with accuracy and parity."""

from __future__ import annotations

import shutil
from pathlib import Path

from tasks.config import Params
from tasks.evaluate import load_predictions
from tasks.export import MODEL_FILE
from tasks.io import TEXT, atomic_dir, read_table, write_json
from tasks.metrics import agreement
from tasks.onnx_model import CLASSIFIER_FILE, TOKENIZER_FILE, OnnxClassifier

INT8_FILE = "model.int8.onnx"


def quantize_dynamic_int8(source: Path, target: Path, per_channel: bool) -> None:
    """Weights to int8 ahead of time, activations quantized at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=per_channel)


def run(params: Params) -> None:
    """Stage entry point: quantize, then measure accuracy and agreement on the test split."""
    source, target = params.path("onnx"), params.path("quantized")
    reference, labels = load_predictions(params.path("predictions"))
    texts = list(read_table(params.path("test_split"))[TEXT])
    with atomic_dir(target) as staging:
        quantize_dynamic_int8(source / MODEL_FILE, staging / INT8_FILE, params.quantize.per_channel)
        for name in (TOKENIZER_FILE, CLASSIFIER_FILE):
            shutil.copy(source / name, staging / name)
        model = OnnxClassifier(staging, INT8_FILE)
        logits = model.logits(texts, params.quantize.batch_size)
    predicted = [model.info.labels[i] for i in logits.argmax(axis=1)]
    fp32_size = (source / MODEL_FILE).stat().st_size
    int8_size = (target / INT8_FILE).stat().st_size
    report = {
        "accuracy": round(sum(p == t for p, t in zip(predicted, labels)) / len(labels), 6),
        "size_bytes": int8_size,
        "size_ratio_vs_fp32": round(int8_size / fp32_size, 4),
        **agreement(reference, logits),
    }
    write_json(params.path("metrics") / "quantize.json", report)
    print(f"quantize: {report}")
