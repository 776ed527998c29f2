"""How long the validate stage takes on SST-2, phase by phase, against the 30 s budget.

    python benchmarks/validation.py [--data ../shared/data/sst2] [--repeat 3]

Runs, in one process, the stage's own code on the SST-2 train file (67k rows)
and on the whole folder (train + dev + test, 70k rows): reading, loading the
tokenizer, the rules (token counts, group findings, label noise, the Great
Expectations suites) with Data Docs, and writing the quarantine. Prints the
median seconds per phase, rows per second and the share of the 30 s goal
(2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from tasks.lib.config import load_params
from tasks.lib.data.readers import read_source
from tasks.lib.validation.checks import check
from tasks.lib.validation.features import TokenCounter

GOAL_S = 30.0
ROOT = Path(__file__).resolve().parent.parent


def one_run(source: Path, docs: Path) -> dict[str, float]:
    """Seconds per phase of one validation of `source`, as the stage does it."""
    params = load_params(ROOT)
    data = params.data.model_copy(update={"source": str(source), "label_map": {"0": "negative", "1": "positive"}})
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    frame = read_source(data, ROOT)
    seconds["read"] = time.perf_counter() - started
    mark = time.perf_counter()
    counter = TokenCounter(params.train.base_model, ROOT)
    seconds["tokenizer"] = time.perf_counter() - mark
    mark = time.perf_counter()
    outcome = check(frame, data, params.validate_, counter, baseline=None, docs=docs)
    seconds["rules+docs"] = time.perf_counter() - mark
    mark = time.perf_counter()
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome.records)
    (docs / "quarantine.jsonl").write_text(lines, encoding="utf-8")
    seconds["quarantine"] = time.perf_counter() - mark
    seconds["total"] = time.perf_counter() - started
    seconds["rows"] = len(frame)
    seconds["flagged"] = len(outcome.reasons)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sources = {"SST-2 train.tsv": args.data / "train.tsv", "SST-2 folder": args.data}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    with tempfile.TemporaryDirectory() as tmp:
        for index in tqdm(range(args.repeat * len(sources)), desc="validation runs"):
            name = list(sources)[index % len(sources)]
            docs = Path(tmp) / f"docs{index}"
            runs[name].append(one_run(sources[name], docs))
    phases = ["read", "tokenizer", "rules+docs", "quarantine", "total"]
    print(
        f"\nmedian of {args.repeat} runs, seconds (the very first run also imported GX and transformers: "
        f"{runs[next(iter(runs))][0]['total']:.2f} s)"
    )
    print(f"{'':<16}" + "".join(f"{p:>12}" for p in phases) + f"{'rows':>8}{'flagged':>9}{'rows/s':>8}{'of 30 s':>9}")
    for name, results in runs.items():
        median = {key: statistics.median(r[key] for r in results) for key in results[0]}
        print(
            f"{name:<16}"
            + "".join(f"{median[p]:>12.2f}" for p in phases)
            + f"{int(median['rows']):>8}{int(median['flagged']):>9}{median['rows'] / median['total']:>8.0f}"
            + f"{median['total'] / GOAL_S:>9.0%}"
        )


if __name__ == "__main__":
    main()
