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
from tasks.lib.config import Params, Task
from tasks.lib.entity_metrics import logit_span_agreement
from tasks.lib.io import atomic_dir, read_table
from tasks.lib.metrics import agreement
from tasks.lib.models import load_predictions, model_labels
from tasks.lib.onnx_classifier import ClassifierInfo, OnnxClassifier
from tasks.lib.onnx_tagger import onnx_tagger
from tasks.lib.sentences import as_sentences
from tasks.lib.stage_runner import run_as_script


def export_onnx(model_dir: Path, out_file: Path, opset: int, task: Task) -> list[str]:
    """Export a Hugging Face sequence or token classifier; returns the graph's input names."""
    import onnx
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tagger = task == "token_classification"
    auto = AutoModelForTokenClassification if tagger else AutoModelForSequenceClassification
    # Eager attention traces to plain MatMul/Softmax, which ORT fuses and quantizes well.
    model = auto.from_pretrained(model_dir, use_safetensors=True, attn_implementation="eager").eval()
    sample = tokenizer(
        ["an example sentence", "another, somewhat longer example sentence"], padding=True, return_tensors="pt"
    )
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with torch.inference_mode():
        torch.onnx.export(
            LogitsOnly(model),
            tuple(sample[n] for n in names),
            str(out_file),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            opset_version=opset,
            # A tagger's logits: one row per subword.
            dynamic_axes={**axes, "logits": {0: "batch", 1: "sequence"} if tagger else {0: "batch"}},
        )
    onnx.checker.check_model(str(out_file), full_check=True)
    return names


def optimize_graph(source: Path, target: Path, model_dir: Path) -> dict[str, int]:
    """ORT transformer fusions on an exported encoder; returns how many of each fused op it made."""
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    # "bert" is ORT's encoder optimizer; its fusions match BERT-like encoders by
    # graph pattern (RoBERTa, MiniLM, ...). opt_level 0: fusions only, no
    # provider-specific rewrites baked into the file.
    optimized = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        opt_level=0,
    )
    optimized.save_model_to_file(str(target))
    return {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}


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
    print(f"export: {report.dump()}")


if __name__ == "__main__":
    run_as_script(run)
