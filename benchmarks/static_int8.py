"""Why static int8 loses a model's accuracy, and which quantization keeps it: measured on a workspace.

Run in a workspace whose `quantize` stage has run (it needs models/onnx and the val and test splits):

    python benchmarks/static_int8.py [--rows 1821] [--calibration-rows 200] [--only shipped,nncf]

Two parts, in one process:

1. **Activation outliers.** For every MatMul with a weight, the range of its input activation on the
   calibration rows (each text alone, unpadded) against its 99.9th percentile of |x|. A per-tensor
   int8 scale must cover the whole range, so a ratio of 50 leaves the bulk of the values a handful of
   the 256 steps: that is where static int8 loses the model.
2. **Quantization recipes side by side.** Each is built with the quantize stage's own code
   (tasks/lib/export/variants.py) from the exported graph and scored on the test split against the fp32
   graph: label agreement (per word for a tagger), accuracy for a classifier, and the share of rows
   whose label changes between batch 1 and a batch of 32 (a static variant's scales are fixed, a dynamic
   one's follow each batch), then batch-1 p50 and size.

Prints both tables (Markdown), ready for docs/guides/variants.md#static-int8.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import TypeAdapter
from tqdm import tqdm

from tasks.lib.artifacts import CLASSIFIER_FILE, MODEL_FILE, TOKENIZER_FILE
from tasks.lib.columns import LABEL, TEXT
from tasks.lib.config import Variant, load_params
from tasks.lib.data.sentences import as_sentences
from tasks.lib.export.variant_measurement import logits_of
from tasks.lib.export.variants import build_variant
from tasks.lib.inference.onnx_classifier import BatchEncoder, ClassifierInfo, onnxruntime_engine
from tasks.lib.io import read_table

FFN_OUTPUT = r"layer\.\d+/output/dense/MatMul$"  # BERT's and MPNet's feed-forward output projection
FFN_INPUT = r"layer\.\d+/intermediate/dense/MatMul$"
STATIC = {"kind": "static_int8", "graph": "exported", "op_types": ["MatMul"], "method": "minmax"}
# name -> variant settings, as they would be written under quantize.variants in params.yaml.
RECIPES: dict[str, dict[str, Any]] = {
    "shipped": {**STATIC, "per_channel": False},
    "per_channel": {**STATIC, "per_channel": True},
    "ffn_output_float": {**STATIC, "per_channel": False, "keep_float": [FFN_OUTPUT]},
    "per_channel_ffn_output_float": {**STATIC, "per_channel": True, "keep_float": [FFN_OUTPUT]},
    "per_channel_ffn_float": {**STATIC, "per_channel": True, "keep_float": [FFN_OUTPUT, FFN_INPUT]},
    "percentile": {**STATIC, "per_channel": True, "method": "percentile"},
    "nncf": {"kind": "nncf_int8", "graph": "exported"},
    "nncf_no_smoothquant": {"kind": "nncf_int8", "graph": "exported", "smooth_quant_alpha": 0.0},
    "nncf_ffn_output_float": {"kind": "nncf_int8", "graph": "exported", "keep_float": [FFN_OUTPUT]},
    "dynamic": {"kind": "dynamic_int8", "graph": "exported", "per_channel": True, "op_types": None},
    "dynamic_ffn_output_float": {
        "kind": "dynamic_int8",
        "graph": "exported",
        "per_channel": True,
        "op_types": None,
        "keep_float": [FFN_OUTPUT],
    },
}


def outlier_table(graph: Path, folder: Path, inputs: list[Any], top: int) -> str:
    """Markdown: the weighted MatMuls' input activations with the largest max/p99.9 ratios."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(graph))
    weights = {initializer.name for initializer in model.graph.initializer}
    consumers = {
        node.input[0]: node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights and node.input[0] not in weights
    }
    del model.graph.output[:]
    for tensor in consumers:
        model.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    values: dict[str, list[np.ndarray]] = {name: [] for name in names}
    encoder = BatchEncoder(folder, {i.name for i in session.get_inputs()})
    for _, feed in tqdm(encoder.batches(inputs, 1), total=len(inputs), desc="activations", unit="text"):
        for name, array in zip(names, session.run(names, feed), strict=True):
            values[name].append(array.reshape(-1))
    rows = []
    for name in names:
        flat = np.concatenate(values[name])
        bulk = float(np.percentile(np.abs(flat), 99.9))
        rows.append((consumers[name], float(flat.min()), float(flat.max()), bulk, float(np.abs(flat).max()) / bulk))
    rows.sort(key=lambda row: -row[4])
    ratios = [row[4] for row in rows]
    lines = [
        f"{len(rows)} weighted MatMuls; max/p99.9 of |input|: median {statistics.median(ratios):.1f}, "
        f"{sum(r > 10 for r in ratios)} above 10\n",
        "| MatMul | min | max | p99.9 of abs | max / p99.9 |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {lo:.2f} | {hi:.2f} | {bulk:.2f} | {ratio:.1f} |" for n, lo, hi, bulk, ratio in rows[:top]]
    return "\n".join(lines)


def p50_ms(logits: Any, inputs: list[Any], rows: int) -> float:
    times = []
    for one in inputs[:rows]:
        started = time.perf_counter()
        logits([one], 1)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--rows", type=int, help="test rows to score (default: all)")
    parser.add_argument("--calibration-rows", type=int, default=200)
    parser.add_argument("--batch1-rows", type=int, default=300, help="rows scored alone for the batch check and p50")
    parser.add_argument("--only", help="comma-separated recipe names (default: all of " + ", ".join(RECIPES) + ")")
    parser.add_argument("--top", type=int, default=12, help="rows of the outlier table")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    params = load_params(args.root)
    onnx_dir = params.path("onnx")
    tagger = params.task == "token_classification"
    calibration: list[Any] = list(read_table(params.path("val_split"))[TEXT])[: args.calibration_rows]
    test = read_table(params.path("test_split"))[: args.rows]
    inputs: list[Any] = as_sentences(test[TEXT]) if tagger else list(test[TEXT])
    calibration = as_sentences(calibration) if tagger else calibration
    labels = ClassifierInfo.load(onnx_dir).labels
    print(f"{onnx_dir}: {len(inputs)} test rows, {len(calibration)} calibration rows, {params.train.base_model}\n")
    print(outlier_table(onnx_dir / MODEL_FILE, onnx_dir, calibration, args.top), "\n")

    def scored(folder: Path, graph: Path) -> dict[str, Any]:
        logits = logits_of(folder, onnxruntime_engine(graph, args.threads), params.task)
        batched = logits(inputs, 32).argmax(-1)
        alone = np.concatenate([logits([one], 1).argmax(-1) for one in inputs[: args.batch1_rows]])
        return {"batched": batched, "alone": alone, "p50": p50_ms(logits, inputs, 100)}

    reference = scored(onnx_dir, onnx_dir / MODEL_FILE)
    gold = None if tagger else np.array([labels.index(label) for label in test[LABEL]])
    chosen = args.only.split(",") if args.only else list(RECIPES)
    lines = [
        "| recipe | agreement with fp32 | accuracy | labels moved by batching | p50 ms | MB | build s |",
        "|---|---|---|---|---|---|---|",
    ]

    def line(name: str, result: dict[str, Any], size: float, seconds: float) -> str:
        accuracy = "" if gold is None else f"{float(np.mean(result['batched'] == gold)):.4f}"
        agree = float(np.mean(result["batched"] == reference["batched"]))
        moved = float(np.mean(result["alone"] != result["batched"][: len(result["alone"])]))
        return f"| {name} | {agree:.4f} | {accuracy} | {moved:.2%} | {result['p50']:.1f} | {size:.1f} | {seconds:.0f} |"

    lines.append(line("fp32 (exported graph)", reference, (onnx_dir / MODEL_FILE).stat().st_size / 1e6, 0))
    adapter: TypeAdapter[Variant] = TypeAdapter(Variant)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for name in (TOKENIZER_FILE, CLASSIFIER_FILE):
            (folder / name).write_bytes((onnx_dir / name).read_bytes())
        for name in tqdm(chosen, desc="recipes", unit="recipe"):
            settings = {"calibration_rows": args.calibration_rows, **RECIPES[name]}
            if settings["kind"] == "dynamic_int8":
                settings.pop("calibration_rows")
            started = time.perf_counter()
            graph = build_variant(name, adapter.validate_python(settings), onnx_dir, folder, calibration)
            seconds = time.perf_counter() - started
            lines.append(line(name, scored(folder, graph), graph.stat().st_size / 1e6, seconds))
            print(lines[-1], flush=True)
            graph.unlink()
    print("\n" + "\n".join(lines))
    described = {name: {k: v for k, v in RECIPES[name].items() if k != "graph"} for name in chosen}
    print("\n" + "\n".join(f"- {name}: {re.sub(r'[{}]', '', str(settings))}" for name, settings in described.items()))


if __name__ == "__main__":
    main()
