"""Serving memory after a burst: the batcher's idle release (serve.release_idle_seconds) against keeping it.

In one run, for each mode a fresh child process (memory is per process) loads the production
version's served graph as `textclf serve` does, answers a burst of batches of long texts through the
batcher (32 texts of up to `--max-tokens` tokens: what an overload leaves behind), then waits idle;
it prints its resident memory (RSS) at start, after the burst and after the idle wait, and the
median time of a batch of 32 ordinary texts before the burst and after the idle wait (the release
must not slow what follows). Modes: `keep` (release_idle_seconds null: the arena and the heap keep
what the largest batch needed) and `release` (1 s). Run in a workspace after `make run`:

    python benchmarks/serving_memory.py [--registry registry] [--rounds 5] [--max-tokens 512]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {"keep": None, "release": 1.0}
SENTENCE = "the film was quietly moving and the acting felt warm but the plot dragged near its end"


def rss_mb() -> float:
    """This process's resident memory, MB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def text(words: int) -> str:
    vocabulary = SENTENCE.split(" ")
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


def child(registry: Path, release_s: float | None, rounds: int, max_tokens: int) -> dict[str, float]:
    """One mode in this process: the figures as a dict."""
    from tasks.apps.batcher import Batcher
    from tasks.lib.inference.production_model import ProductionModel

    model = ProductionModel(registry)
    version, served = model.current()
    start = rss_mb()
    ordinary = [text(12 + i % 20) for i in range(32)]

    async def scenario() -> dict[str, float]:
        batcher = Batcher(32, 0, 10_000, 60_000, release_s)
        batcher.start()

        async def batch_ms(texts: list[str]) -> float:
            times = []
            for _ in range(rounds):
                began = time.perf_counter()
                await batcher.predict(version, served, texts)
                times.append((time.perf_counter() - began) * 1000)
            return statistics.median(times)

        before_ms = await batch_ms(ordinary)
        for words in (max_tokens // 4, max_tokens // 2, max_tokens):
            await batcher.predict(version, served, [text(words)] * 32)
        burst = rss_mb()
        await asyncio.sleep((release_s or 0) + 3)
        idle = rss_mb()
        after_ms = await batch_ms(ordinary)
        batcher.stop(10)
        return {
            "start_mb": start,
            "burst_mb": burst,
            "idle_mb": idle,
            "batch32_before_ms": before_ms,
            "batch32_after_ms": after_ms,
            "releases": batcher.status().memory_releases,
        }

    return asyncio.run(scenario())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=Path("registry"))
    parser.add_argument("--rounds", type=int, default=5, help="batches timed before and after (median)")
    parser.add_argument("--max-tokens", type=int, default=512, help="the longest texts of the burst, in words")
    parser.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.registry, MODES[args.child], args.rounds, args.max_tokens)))
        return
    results = {}
    for mode in MODES:
        options = ["--registry", str(args.registry), "--rounds", str(args.rounds), "--max-tokens", str(args.max_tokens)]
        done = subprocess.run(
            [sys.executable, __file__, "--child", mode, *options],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print("| mode | RSS start | after the burst | idle after | batch of 32 before | after | releases |")
    print("|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        print(
            f"| {mode} | {r['start_mb']:.0f} MB | {r['burst_mb']:.0f} MB | {r['idle_mb']:.0f} MB "
            f"| {r['batch32_before_ms']:.1f} ms | {r['batch32_after_ms']:.1f} ms | {r['releases']} |"
        )
    keep, release = results["keep"], results["release"]
    print(
        f"idle memory, release / keep: {release['idle_mb'] / keep['idle_mb']:.2f}; "
        f"batch of 32 after the idle wait, release / keep: {release['batch32_after_ms'] / keep['batch32_after_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
