"""Data at scale: seconds and peak memory of ingest, validate and split as the data grows.

    python benchmarks/scale.py [--sizes 67k 673k 6.7m] [--full] [--stop-after-gb 20] [--stages ingest ...]
        [--against REV [--rounds 2]]

Generates the data itself: SST-2's train file (67,349 rows) repeated, each copy's texts
suffixed with the copy's number so every text stays unique, as a TSV per size. Each size
runs in a workspace of its own (params.yaml with data.source pointing at the file), each
stage as its own process (`python -m tasks.stages.<name>`, as DVC runs it); the peak
memory is that process's maximum resident set size (from wait4). Prints a table with
seconds, rows/s and peak GB per stage and size, the end-to-end rows/s, and the growth in
time and memory from each size to the next (time should grow like the rows; memory should
not grow at all once the stages stream).

`--full` adds 10 million rows. A size whose previous one peaked above `--stop-after-gb`
is skipped, with the projection that made it so, rather than run into the machine's limit.

`--against REV` compares this checkout's code with commit REV's (its files from git archive):
for each size, in one workspace, the stages of both run alternately `--rounds` times (this
host's speed drifts within an hour, so only figures from one run compare), and the ratio of
the mean end-to-end seconds is printed. Both use this Python environment.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

import pandas as pd
import yaml
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
SST2_TRAIN = ROOT.parent / "shared" / "data" / "sst2" / "train.tsv"
STAGES = ("ingest", "validate", "split")
NAMED_SIZES = {"67k": 67_349, "673k": 673_490, "6.7m": 6_734_900, "10m": 10_000_000}


def rows_of(size: str) -> int:
    """`67k`, `673k`, `6.7m`, `10m` or a plain number of rows."""
    return NAMED_SIZES.get(size.lower()) or int(size)


def generate(rows: int, target: Path) -> Path:
    """SST-2 train repeated to `rows` rows, `sentence<TAB>label`, each copy's texts suffixed (` c<copy>`)."""
    source = pd.read_csv(SST2_TRAIN, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    copies = math.ceil(rows / len(source))
    with target.open("w", encoding="utf-8") as sink:
        sink.write("sentence\tlabel\n")
        written = 0
        for copy in tqdm(range(copies), desc=f"generating {rows:,} rows", leave=False, disable=None):
            part = source.iloc[: rows - written]
            suffix = f" c{copy}" if copy else ""
            sink.writelines(
                f"{text}{suffix}\t{label}\n" for text, label in zip(part["sentence"], part["label"], strict=True)
            )
            written += len(part)
    return target


def workspace(folder: Path, data_file: Path) -> Path:
    """A workspace whose params.yaml is the project's with data.source set to `data_file`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["source"] = str(data_file)
    params["data"]["label_map"] = {"0": "negative", "1": "positive"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def run_stage(name: str, folder: Path, code: Path = ROOT) -> tuple[float, float]:
    """(seconds, peak GB of the stage's process) of `python -m tasks.stages.<name>` in `folder`,
    with the project's code from `code` (this checkout, or another commit's files)."""
    env = {**os.environ, "PYTHONPATH": str(code), "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", f"tasks.stages.{name}"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"stage {name} failed ({process.returncode}) in {folder}:\n{errors.decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def against(rev: str, base: Path) -> Path:
    """Commit `rev`'s files (git archive) in a folder under `base`, made once."""
    tree = base / f"code-{rev}"
    if not tree.exists():
        tree.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def measure(
    rows: int, folder: Path, stages: list[str], labels: dict[str, object], code: Path = ROOT
) -> list[dict[str, object]]:
    """One run of `stages` in `folder`: a record per stage and one end to end, each starting with `labels`."""
    records: list[dict[str, object]] = []
    total = peak = 0.0
    for name in stages:
        seconds, gigabytes = run_stage(name, folder, code)
        total, peak = total + seconds, max(peak, gigabytes)
        records.append(
            {
                **labels,
                "stage": name,
                "seconds": round(seconds, 1),
                "rows/s": round(rows / seconds),
                "peak GB": round(gigabytes, 2),
            }
        )
        print(records[-1], flush=True)
    end = {"stage": "end to end", "seconds": round(total, 1), "rows/s": round(rows / total), "peak GB": round(peak, 2)}
    return [*records, {**labels, **end}]


def compare(rows: int, folder: Path, stages: list[str], codes: dict[str, Path], rounds: int) -> None:
    """The stages from each code in turn, `rounds` times, in one workspace; a table and the ratio."""
    results = [
        record
        for round_ in range(1, rounds + 1)
        for label, code in codes.items()
        for record in measure(rows, folder, stages, {"code": label, "round": round_}, code)
    ]
    table = pd.DataFrame(results)
    print(f"\n{rows:,} rows, the stages of each code alternately:")
    print(table.to_string(index=False))
    ends = table[table["stage"] == "end to end"].groupby("code", sort=False)["seconds"].mean()
    (old, mean_old), (new, mean_new) = ends.items()
    print(
        f"\nmean end to end: {old} {mean_old:.1f} s ({rows / mean_old:,.0f} rows/s), {new} {mean_new:.1f} s "
        f"({rows / mean_new:,.0f} rows/s); {new} is {mean_old / mean_new:.2f}x as fast"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["67k", "673k", "6.7m"])
    parser.add_argument("--full", action="store_true", help="also 10 million rows")
    parser.add_argument("--stop-after-gb", type=float, default=20.0, help="skip a size projected past this peak")
    parser.add_argument("--keep", type=Path, help="keep the generated files and workspaces here")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="the first stages only")
    parser.add_argument("--against", metavar="REV", help="compare with commit REV's code, alternating")
    parser.add_argument("--rounds", type=int, default=2, help="with --against: runs of each code")
    args = parser.parse_args()
    sizes = [rows_of(size) for size in [*args.sizes, *(["10m"] if args.full else [])]]
    base = args.keep or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    results: list[dict[str, object]] = []
    previous_peak: tuple[int, float] | None = None
    for rows in sizes:
        if previous_peak is not None:
            projected = previous_peak[1] * rows / previous_peak[0]
            if projected > args.stop_after_gb:
                print(f"{rows:,} rows skipped: memory growing with the rows projects {projected:.1f} GB")
                continue
        folder = workspace(base / f"rows-{rows}", base / f"sst2-{rows}.tsv")
        if not (base / f"sst2-{rows}.tsv").exists():
            generate(rows, base / f"sst2-{rows}.tsv")
        stages = list(STAGES[: max(STAGES.index(stage) for stage in args.stages) + 1])
        if args.against:
            compare(
                rows, folder, stages, {args.against: against(args.against, base), "this checkout": ROOT}, args.rounds
            )
            continue
        results += measure(rows, folder, stages, {"rows": rows})
        previous_peak = (rows, cast(float, results[-1]["peak GB"]))
    if args.against:
        return
    table = pd.DataFrame(results)
    print(f"\nIngest, validate and split on {os.cpu_count()} cores (each stage its own process):")
    print(table.to_string(index=False))
    ends = table[table["stage"] == "end to end"].reset_index(drop=True)
    growth = [
        {
            "from": f"{ends['rows'][i - 1]:,}",
            "to": f"{ends['rows'][i]:,}",
            "rows x": round(ends["rows"][i] / ends["rows"][i - 1], 1),
            "time x": round(ends["seconds"][i] / ends["seconds"][i - 1], 1),
            "peak memory x": round(ends["peak GB"][i] / ends["peak GB"][i - 1], 1),
        }
        for i in range(1, len(ends))
    ]
    if growth:
        print("\nGrowth from each size to the next (time should follow the rows, memory stay flat):")
        print(pd.DataFrame(growth).to_string(index=False))
    print(f"\nFiles and workspaces: {base}")


if __name__ == "__main__":
    main()
