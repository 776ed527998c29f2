"""Stage `export`: the candidate to ONNX (dynamic batch and sequence axes), checked, optimised.

Two graphs: `model.onnx` as exported, and `model.opt.onnx` with ONNX Runtime's
transformer fusions (Attention, SkipLayerNormalization, BiasGelu,
EmbedLayerNormalization). The fusions are pattern rewrites that keep the graph
portable across execution providers; ORT's own level-specific rewrites happen
when a session loads it. The folder is self-contained: graphs, tokenizer and
label names. Parity of both graphs with PyTorch is measured on the test split
against the logits the evaluate stage saved; a token classifier's (its logits
per subword) word by word and by entity spans.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from tasks.lib.artifacts import (
    GRAPH_FILES,
    MODEL_FILE,
    OPTIMIZED_FILE,
    TOKENIZER_FILE,
    ExportMetrics,
    GraphParity,
)
from tasks.lib.columns import TEXT
from tasks.lib.config import Params
from tasks.lib.data.sentences import as_sentences
from tasks.lib.evaluation.entity_metrics import logit_span_agreement
from tasks.lib.evaluation.metrics import agreement
from tasks.lib.export.onnx_export import export_onnx, optimize_graph
from tasks.lib.inference.onnx_classifier import ClassifierInfo, OnnxClassifier
from tasks.lib.inference.onnx_tagger import onnx_tagger
from tasks.lib.io import atomic_dir, read_table
from tasks.lib.stage_runner import run_as_script
from tasks.lib.training.models import load_predictions, model_labels

log = logging.getLogger(__name__)


def graph_parity(folder: Path, file: str, reference: np.ndarray, test: pd.DataFrame, params: Params) -> GraphParity:
    """One graph's logits on the test split against PyTorch's; a tagger's also by entity spans."""
    batch_size, size = params.export.batch_size, (folder / file).stat().st_size
    if params.task != "token_classification":
        logits = OnnxClassifier(folder, file).logits(list(test[TEXT]), batch_size)
        return GraphParity(file=file, size_bytes=size, **agreement(reference, logits))
    tagger = onnx_tagger(folder, file)
    sentences = as_sentences(test[TEXT])
    logits, lengths = tagger.logits(sentences, batch_size), [len(s) for s in sentences]
    spans = logit_span_agreement(reference, logits, lengths, tagger.info.labels, list(params.data.labels))
    return GraphParity(file=file, size_bytes=size, span_agreement=spans, **agreement(reference, logits))


def run(params: Params) -> None:
    """Stage entry point: export, check, optimise, and measure parity with PyTorch on the test split."""
    model_dir, target = params.path("model"), params.path("onnx")
    reference, _ = load_predictions(params.path("predictions"))
    test = read_table(params.path("test_split"))
    with atomic_dir(target) as staging:
        inputs = export_onnx(model_dir, staging / MODEL_FILE, params.export.opset, params.task)
        fused = optimize_graph(staging / MODEL_FILE, staging / OPTIMIZED_FILE, model_dir)
        shutil.copy(model_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        ClassifierInfo(model_labels(model_dir), params.train.max_length, params.task).save(staging)
        graphs = {name: graph_parity(staging, file, reference, test, params) for name, file in GRAPH_FILES.items()}
    report = ExportMetrics(
        inputs=inputs,
        opset=params.export.opset,
        fused_ops=fused,
        exported=graphs["exported"],
        optimized=graphs["optimized"],
    )
    report.write(params)
    log.info(f"export: {report.dump()}")


if __name__ == "__main__":
    run_as_script(run)
