"""Stage `quantize`: build the serving variants set in params, then measure them against PyTorch.

Each variant (`model.<name>.onnx`, or `.xml`/`.bin` for OpenVINO, in one
self-contained folder with the tokenizer and label names) is one of: the fp32
graph, dynamic int8, static int8 (QDQ, activation ranges calibrated on
validation rows, by ONNX Runtime's quantizer or by NNCF), fp16, the graph in
OpenVINO's format, or the PyTorch model structurally pruned (heads and
feed-forward neurons, tasks/lib/export/pruning.py), exported anew and
optionally dynamic int8. The stage then runs PyTorch fp32 and every variant side by side on the test split
(tasks/lib/export/variant_measurement.py): agreement, accuracy at batch 1 and at batch size,
latency, throughput and size, into `metrics/quantize.json` and
`reports/quantize.md`. The gate picks the one to promote from those figures.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

from tasks.lib.artifacts import CLASSIFIER_FILE, MODEL_FILE, QUANTIZE_REPORT_FILE, TOKENIZER_FILE
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import as_sentences
from tasks.lib.export.variant_measurement import measure_variants, render
from tasks.lib.export.variants import build_variant
from tasks.lib.io import atomic_dir, read_table, write_text
from tasks.lib.stage_runner import run_as_script

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Stage entry point: build every variant, measure them with PyTorch, write metrics and report."""
    onnx_dir, target = params.path("onnx"), params.path("quantized")
    tagger = params.task == "token_classification"
    calibration: list[Any] = list(read_table(params.path("val_split"))[TEXT])
    test = read_table(params.path("test_split"))
    inputs: list[Any] = as_sentences(test[TEXT]) if tagger else list(test[TEXT])
    truth = as_sentences(test[LABEL]) if tagger else [[label] for label in test[LABEL]]
    with atomic_dir(target) as staging:
        for name in (TOKENIZER_FILE, CLASSIFIER_FILE):
            shutil.copy(onnx_dir / name, staging / name)
        built = {}
        for name, variant in params.quantize.variants.items():
            built[name] = build_variant(
                name,
                variant,
                onnx_dir,
                staging,
                as_sentences(calibration) if tagger else calibration,
                params.path("model"),
            ).name
            log.info(f"quantize: built {built[name]} ({variant.kind} of the {variant.graph} graph)")
        report = measure_variants(
            model_dir=params.path("model"),
            folder=staging,
            variants=built,
            fp32_onnx=onnx_dir / MODEL_FILE,
            inputs=inputs,
            truth=truth,
            config=params.quantize.benchmark,
            types=list(params.data.labels) if tagger else None,
        )
    report.write(params)
    write_text(params.path("reports") / QUANTIZE_REPORT_FILE, render(report))
    log.info(render(report))


if __name__ == "__main__":
    run_as_script(run)
