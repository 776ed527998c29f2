"""Hugging Face classifiers to ONNX (dynamic batch and sequence axes, checked), and ONNX Runtime's
transformer fusions on the exported graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.lib.config import Task
from tasks.lib.training.parameter_efficient import load_trained


def load_for_export(model_dir: Path, task: Task) -> Any:
    """A saved sequence or token classifier, in eval mode, with the attention that exports best."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if task == "token_classification" else AutoModelForSequenceClassification
    # Eager attention traces to plain MatMul/Softmax, which ORT fuses and quantizes well.
    return load_trained(auto, model_dir, attn_implementation="eager")


def export_onnx(model_dir: Path, out_file: Path, opset: int, task: Task) -> list[str]:
    """Export a saved Hugging Face sequence or token classifier; returns the graph's input names."""
    from transformers import AutoTokenizer

    return export_model(
        load_for_export(model_dir, task), AutoTokenizer.from_pretrained(model_dir), out_file, opset, task
    )


def export_model(model: Any, tokenizer: Any, out_file: Path, opset: int, task: Task) -> list[str]:
    """Export a loaded classifier (`load_for_export`, pruned or not); returns the graph's input names."""
    import onnx
    import torch

    tagger = task == "token_classification"
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
            # eval(): the exporter puts the module back in the mode it found it in, and a new
            # wrapper starts in training mode, which would leave the model's dropout on.
            LogitsOnly(model).eval(),
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
