"""Load and run an exported classifier with ONNX Runtime or OpenVINO: no torch on this path.

A model folder holds the graph, `tokenizer.json` and `classifier.json` (label
names and the maximum sequence length), so it is usable on its own. The graph
file's suffix names its runtime: `.onnx` runs in ONNX Runtime, `.xml` (an
OpenVINO model converted from the ONNX export, weights in the `.bin` beside it)
in OpenVINO's CPU plugin.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tasks.lib.artifacts import CLASSIFIER_FILE, TOKENIZER_FILE, is_openvino
from tasks.lib.config import Task

# Graph input name -> tokenizers.Encoding attribute.
_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


@dataclass(frozen=True)
class ClassifierInfo:
    """What a model folder serves: its label names (a tagger's: its tags) in the order of its logits,
    the longest input in subwords, and its task (folders exported before there were taggers hold none)."""

    labels: list[str]
    max_length: int
    task: Task = "sequence_classification"

    def save(self, folder: Path) -> None:
        (folder / CLASSIFIER_FILE).write_text(
            json.dumps({"labels": self.labels, "max_length": self.max_length, "task": self.task}, indent=2) + "\n",
            encoding="utf-8",
        )

    @classmethod
    def load(cls, folder: Path) -> ClassifierInfo:
        data = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
        return cls(
            labels=[str(label) for label in data["labels"]],
            max_length=int(data["max_length"]),
            task=data.get("task", "sequence_classification"),
        )


# What one more inference call costs, in padded tokens. Chosen by measuring SST-2 dev in
# random batches of 32 (MiniLM int8, 2 cores): 185 texts/s padded as one batch each;
# with cuts at call costs 4/16/32/64: 313/355/373/351 texts/s.
CALL_COST_TOKENS = 32
# Above this many texts, fixed-size runs of sorted lengths already waste little padding.
_PARTITION_LIMIT = 256


def length_batches(lengths: Sequence[int], batch_size: int, cut: bool = False) -> list[np.ndarray]:
    """Indices grouped into batches of similar length (stable: equal lengths keep their order).

    Each batch pads to its own longest text; runs of `batch_size` sorted lengths by
    default. With `cut` (a server's batch: a few texts of mixed lengths), the cut points
    minimise padded tokens plus a cost per call (a small dynamic programme over the
    sorted lengths): 32 random SST-2 texts as one batch pad about twice the tokens
    they hold, and run at half the speed.
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    if not cut or len(order) > _PARTITION_LIMIT:
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    ordered = [int(lengths[i]) for i in order]
    best = [0.0] + [np.inf] * len(ordered)  # best[j]: least cost of the first j texts
    first = [0] * (len(ordered) + 1)  # first[j]: where the last batch of the best cut of j starts
    for end in range(1, len(ordered) + 1):
        for start in range(max(0, end - batch_size), end):
            cost = best[start] + (end - start) * ordered[end - 1] + CALL_COST_TOKENS
            if cost < best[end]:
                best[end], first[end] = cost, start
    bounds, end = [], len(ordered)
    while end:
        bounds.append((first[end], end))
        end = first[end]
    return [order[start:end] for start, end in reversed(bounds)]


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options with `threads` intra-op threads.

    None: OMP_NUM_THREADS where it is set, as PyTorch reads it, else one per core. ONNX Runtime
    itself ignores that variable, so a process told to use one core (a worker sharing the machine
    with others) would otherwise spin a thread per core against its neighbours.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    limit = os.environ.get("OMP_NUM_THREADS", "")
    threads = threads or (int(limit) if limit.isdigit() and int(limit) > 0 else None)
    if threads:
        options.intra_op_num_threads = threads
    return options


class BatchEncoder:
    """Tokenizes texts into model feeds, batched by token length.

    A batch pads only to its own longest text: faster, and the activation
    ranges that dynamic int8 measures per batch stay close to those of
    unpadded texts.
    """

    def __init__(self, folder: Path, input_names: set[str]):
        from tokenizers import Tokenizer

        self.info = ClassifierInfo.load(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(self.info.max_length)
        # A saved tokenizer.json may carry fixed padding (MiniLM's pads every text to 128 tokens): each
        # batch pads to its own longest text instead (`feeds`), or length batching would save nothing.
        self.tokenizer.no_padding()
        self.fields = {name: field for name, field in _FIELDS.items() if name in input_names}

    def encode(self, inputs: Sequence[str] | Sequence[list[str]]) -> list[Any]:
        """`tokenizers.Encoding`s of texts, or of sentences given as lists of words (each word split
        into subwords on its own, as `is_split_into_words` does in transformers)."""
        pretokenized = bool(inputs) and isinstance(inputs[0], list)
        return list(self.tokenizer.encode_batch(list(inputs), is_pretokenized=pretokenized))

    def batches(
        self, inputs: Sequence[str] | Sequence[list[str]], batch_size: int, cut: bool = False
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(row indices, feed of int64 arrays) per batch; every row of `inputs` appears once (`cut`: length_batches)."""
        return self.feeds(self.encode(inputs), batch_size, cut)

    def feeds(
        self, encodings: Sequence[Any], batch_size: int, cut: bool = False
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """`batches` of encodings made already."""
        for batch in length_batches([len(e.ids) for e in encodings], batch_size, cut):
            chosen = [encodings[i] for i in batch]
            width = max(len(e.ids) for e in chosen)
            # Padding ids are masked out of attention, so any id will do.
            yield (
                batch,
                {
                    name: np.array([getattr(e, field) + [0] * (width - len(e.ids)) for e in chosen], dtype=np.int64)
                    for name, field in self.fields.items()
                },
            )

    def run(
        self,
        texts: Sequence[str],
        batch_size: int,
        forward: Callable[[dict[str, np.ndarray]], np.ndarray],
        cut: bool = False,
    ) -> np.ndarray:
        """Logits of `forward` over `texts`, shape (len(texts), labels), in the order of `texts`."""
        out = np.zeros((len(texts), len(self.info.labels)), dtype=np.float32)
        for rows, feed in self.batches(texts, batch_size, cut):
            out[rows] = forward(feed)
        return out


Forward = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Engine:
    """A loaded graph: its input names, its forward function, what runs it (e.g. `openvino 2026.4.1 bf16`),
    and how it gives back the working memory its largest batch left (None: nothing to give back)."""

    inputs: set[str]
    forward: Forward
    description: str
    release: Callable[[], None] | None = None


_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def onnxruntime_engine(path: Path, threads: int | None) -> Engine:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    # ONNX Runtime's CPU arena keeps the buffers of the largest batch it ever ran (1.4 GB after batches of
    # 512 tokens on MiniLM) and only shrinks at the end of a run that asks it to; the arena itself stays
    # on, since without it every batch allocates afresh (4-13% slower at batch 32: benchmarks/serving_memory.py).
    shrink = ort.RunOptions()
    shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    one_token = {i.name: np.zeros((1, 1), _NUMPY_TYPES.get(i.type, np.int64)) for i in inputs}

    def release() -> None:
        session.run(["logits"], one_token, shrink)

    return Engine(
        {i.name for i in inputs},
        lambda feed: session.run(["logits"], feed)[0],
        f"onnxruntime {ort.__version__}",
        release,
    )


def release_memory(model: Any) -> None:
    """Give back to the system the memory that large batches left: the engine's arena shrunk, then the C
    heap's free pages (glibc keeps freed blocks otherwise). For an idle server; answers are unchanged."""
    release = getattr(getattr(model, "engine", None), "release", None)
    if release is not None:
        release()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim this way
        pass


# Where an OpenVINO model carries the precision it was measured with (quantize writes it).
OPENVINO_PRECISION_KEY = ["textclf", "inference_precision"]


def import_openvino() -> ModuleType:
    """`openvino`, imported without its usage telemetry.

    Importing openvino posts an event to Google Analytics (openvino.tools.ovc) unless a
    consent file in ~/intel says no. A None entry in sys.modules makes `import
    openvino_telemetry` fail, and OpenVINO then uses its own no-op stub: offline by default.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: "cannot be imported"
    import openvino

    return openvino


def openvino_engine(path: Path, threads: int | None) -> Engine:
    """Compile for the CPU with the latency hint; bf16 only where the CPU computes it natively."""
    ov = import_openvino()

    core = ov.Core()
    model = core.read_model(path)
    wanted = (
        model.get_rt_info(OPENVINO_PRECISION_KEY).astype(str) if model.has_rt_info(OPENVINO_PRECISION_KEY) else "f32"
    )
    native_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        # Without native support the plugin would emulate bf16, slower than f32.
        "INFERENCE_PRECISION_HINT": "bf16" if wanted == "bf16" and native_bf16 else "f32",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(model, "CPU", config)
    request, logits = compiled.create_infer_request(), compiled.output("logits")
    # One request, so one call at a time (ONNX Runtime sessions allow concurrent calls).
    lock = threading.Lock()

    def forward(feed: dict[str, np.ndarray]) -> np.ndarray:
        with lock:
            return np.array(request.infer(feed)[logits], dtype=np.float32)

    precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return Engine(
        {name for port in compiled.inputs for name in port.get_names()},
        forward,
        f"openvino {ov.get_version().split('-')[0]} {precision}",
    )


def load_engine(path: Path, threads: int | None) -> Engine:
    """The graph at `path` in the runtime its suffix names."""
    return (openvino_engine if is_openvino(path.name) else onnxruntime_engine)(path, threads)


class OnnxClassifier:
    """Batched text classification with an exported model folder (ONNX Runtime or OpenVINO by the file's suffix)."""

    def __init__(self, folder: Path, model_file: str, threads: int | None = None):
        self.folder, self.model_file = folder, model_file
        self.engine = load_engine(folder / model_file, threads)
        self.encoder = BatchEncoder(folder, self.engine.inputs)
        self.info = self.encoder.info

    def logits(self, texts: Sequence[str], batch_size: int = 32, cut: bool = False) -> np.ndarray:
        """Raw logits, shape (len(texts), number of labels), in the order of `texts` (`cut`: length_batches)."""
        return self.encoder.run(texts, batch_size, self.engine.forward, cut)

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        return [self.info.labels[i] for i in self.logits(texts, batch_size).argmax(axis=1)]
