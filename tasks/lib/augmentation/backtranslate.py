"""Back-translation through a pivot language, behind one small interface, with a cache.

Engines: Apertium (offline, rule-based, CPU) and MarianMT through transformers
(batched generation; fp16/bf16 on CUDA). Both translate English -> pivot ->
English; `CachedTranslator` keeps each result under a key made of the text and
the engine's settings, so retraining on grown data translates only new rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

from tqdm import tqdm

from tasks.lib.augmentation.errors import EngineError
from tasks.lib.config import BackTranslationConfig, MarianConfig

# Apertium's plain-text mode moves words across line breaks; in HTML mode a
# paragraph is a hard boundary, so one paragraph per sentence keeps rows aligned.
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.DOTALL)
APERTIUM_MODES = Path("/usr/share/apertium/modes")
# Sentences per Apertium pipe at most: large enough that starting it costs little, small enough for progress.
CHUNK_MAX = 5000


class BackTranslator(Protocol):
    """English -> pivot -> English, one output per input, in order."""

    settings: dict[str, Any]

    def back_translate(self, texts: Sequence[str]) -> list[str]: ...


class ApertiumTranslator:
    """Offline rule-based back-translation with Apertium (Debian `apertium-eng-<pivot>`)."""

    def __init__(self, pivot: str = "spa", batch_size: int = 200, timeout_s: float = 300.0):
        if shutil.which("apertium") is None:
            raise EngineError(
                "augment.backtranslation.engine is apertium, which is not installed: "
                "`apt-get install apertium apertium-eng-spa` (make install does this)"
            )
        self.forward, self.backward = f"eng-{pivot}", f"{pivot}-eng"
        missing = [pair for pair in (self.forward, self.backward) if not (APERTIUM_MODES / f"{pair}.mode").exists()]
        if missing:
            installed = sorted(p.stem for p in APERTIUM_MODES.glob("*.mode"))
            raise EngineError(
                f"augment.backtranslation.apertium.pivot '{pivot}': Apertium has no {missing} "
                f"(installed: {installed}); `apt-get install apertium-eng-{pivot}` if it exists"
            )
        self.batch_size, self.timeout_s = batch_size, timeout_s
        self.settings = {"engine": "apertium", "pivot": pivot}
        # A pipe is two chains of about ten Apertium programs running at once: it keeps about two cores
        # busy (measured: 14.3 CPU-seconds in 7.2 s on 4,000 SST-2 sentences), so on two cores a
        # second pipe only competes with the first.
        self.pipes = max(1, len(os.sched_getaffinity(0)) // 2)

    def _round_trip(self, texts: Sequence[str]) -> list[str]:
        """One `apertium eng-<pivot> | apertium <pivot>-eng` pipe over `texts`: the two directions run at once."""
        document = "".join(f"<p>{html.escape(t, quote=False)}</p>\n" for t in texts)
        with tempfile.TemporaryFile() as forward_err, tempfile.TemporaryFile() as backward_err:
            forward = subprocess.Popen(
                ["apertium", "-u", "-f", "html", self.forward],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=forward_err,
            )
            backward = subprocess.Popen(
                ["apertium", "-u", "-f", "html", self.backward],
                stdin=forward.stdout,
                stdout=subprocess.PIPE,
                stderr=backward_err,
            )
            assert forward.stdin is not None and forward.stdout is not None
            forward.stdout.close()  # the backward process owns it now: forward sees a closed pipe if it dies
            writer = threading.Thread(target=_feed, args=(forward.stdin, document.encode()), daemon=True)
            writer.start()
            try:
                out, _ = backward.communicate(timeout=self.timeout_s)
                forward.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired as exc:
                for process in (forward, backward):
                    process.kill()
                raise EngineError(
                    f"apertium {self.forward} | {self.backward} timed out after {self.timeout_s}s"
                ) from exc
            for process, pair, errors in (
                (forward, self.forward, forward_err),
                (backward, self.backward, backward_err),
            ):
                if process.returncode != 0:
                    errors.seek(0)
                    said = errors.read().decode(errors="replace").strip()[:500]
                    raise EngineError(f"apertium {pair} failed ({process.returncode}): {said}")
        back = [html.unescape(" ".join(p.split())) for p in _PARAGRAPH.findall(out.decode())]
        if len(back) != len(texts):
            raise EngineError(
                f"apertium {self.forward} | {self.backward} returned {len(back)} sentences for {len(texts)}"
            )
        # HTML mode capitalises each paragraph; keep the source's casing style.
        return [b[:1].lower() + b[1:] if s[:1].islower() else b for s, b in zip(texts, back, strict=True)]

    def back_translate(self, texts: Sequence[str]) -> list[str]:
        """Chunks of at least `batch_size` sentences, one pipe each, `pipes` pipes at once.

        Each pipe costs about half a second to start, so chunks are large: one per pipe for a small
        input, at most CHUNK_MAX sentences (progress) for a large one.
        """
        size = min(CHUNK_MAX, max(self.batch_size, -(-len(texts) // self.pipes)))
        starts = range(0, len(texts), size)
        results: list[list[str]] = []
        with (
            ThreadPoolExecutor(max_workers=self.pipes) as pool,
            tqdm(total=len(texts), desc="apertium", disable=len(texts) <= size) as bar,
        ):
            for chunk in pool.map(self._round_trip, [texts[start : start + size] for start in starts]):
                results.append(chunk)
                bar.update(len(chunk))
        return [text for chunk in results for text in chunk]


def _feed(sink: IO[bytes], data: bytes) -> None:
    """Write `data` and close: in a thread, so the pipe's far end is read at the same time."""
    with contextlib.suppress(BrokenPipeError):  # the process died: its exit status says why
        sink.write(data)
    with contextlib.suppress(BrokenPipeError):
        sink.close()


class MarianTranslator:
    """MarianMT (or any transformers seq2seq model) in both directions, batched.

    Sampling is seeded per text, so a text's back-translation does not depend
    on the batch it came in (and the cache holds what a fresh run would make).
    """

    def __init__(self, forward: str, backward: str, batch_size: int, generation: dict[str, Any], seed: int):
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if self.device == "cuda" else None
        self.models = []
        for key, name in (("forward", forward), ("backward", backward)):
            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForSeq2SeqLM.from_pretrained(name, dtype=dtype).to(self.device).eval()
            except OSError as exc:
                raise EngineError(
                    f"augment.backtranslation.marian.{key}: cannot load '{name}' (not a local "
                    f"model folder, and not downloadable offline): {str(exc).splitlines()[0]}"
                ) from exc
            self.models.append((tokenizer, model))
        self.batch_size, self.generation, self.seed = batch_size, generation, seed
        self.settings = {"engine": "marian", "forward": forward, "backward": backward, "seed": seed, **generation}

    def _translate(self, texts: list[str], direction: int) -> list[str]:
        import torch

        tokenizer, model = self.models[direction]
        out: list[str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            if self.generation["do_sample"]:  # one seeded generation per text: batch-independent
                generated = []
                for text in batch:
                    torch.manual_seed(self.seed + int(hashlib.sha256(text.encode()).hexdigest()[:8], 16))
                    inputs = tokenizer([text], return_tensors="pt", truncation=True, return_token_type_ids=False).to(
                        self.device
                    )
                    with torch.inference_mode():
                        generated.append(model.generate(**inputs, **self.generation)[0])
                out += tokenizer.batch_decode(generated, skip_special_tokens=True)
            else:
                inputs = tokenizer(
                    batch, return_tensors="pt", padding=True, truncation=True, return_token_type_ids=False
                ).to(self.device)
                with torch.inference_mode():
                    out += tokenizer.batch_decode(model.generate(**inputs, **self.generation), skip_special_tokens=True)
        return [" ".join(text.split()) for text in out]

    def back_translate(self, texts: Sequence[str]) -> list[str]:
        return self._translate(self._translate(list(texts), 0), 1)


class CachedTranslator:
    """A translator whose results are kept on disk by (text, engine settings)."""

    def __init__(self, engine: BackTranslator, folder: Path):
        self.engine = engine
        self.settings = engine.settings
        digest = hashlib.sha256(json.dumps(engine.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.file = folder / f"backtranslation-{digest}.jsonl"
        self.known: dict[str, str] = {}
        if self.file.exists():
            for line in self.file.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut off by a killed run: translated again
                self.known[record["key"]] = record["text"]
        self.lookups = self.hits = 0

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    def back_translate(self, texts: Sequence[str]) -> list[str]:
        keys = [self.key(t) for t in texts]
        missing = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in self.known))
        self.lookups += len(texts)
        self.hits += len(texts) - sum(1 for k in keys if k not in self.known)
        if missing:
            fresh = self.engine.back_translate(missing)
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.file.open("a", encoding="utf-8") as sink:
                for text, result in zip(missing, fresh, strict=True):
                    self.known[self.key(text)] = result
                    sink.write(json.dumps({"key": self.key(text), "text": result}) + "\n")
        return [self.known[k] for k in keys]

    @property
    def hit_rate(self) -> float | None:
        return round(self.hits / self.lookups, 4) if self.lookups else None


def generation_settings(config: MarianConfig) -> dict[str, Any]:
    """`generate()` keyword arguments from `augment.backtranslation.marian`."""
    return config.model_dump(exclude={"forward", "backward"})


def make_translator(config: BackTranslationConfig, seed: int, cache: Path | None) -> BackTranslator:
    """The configured engine, behind the cache when `cache` is a folder."""
    engine: BackTranslator
    if config.engine == "apertium":
        engine = ApertiumTranslator(config.apertium.pivot, config.batch_size)
    else:
        engine = MarianTranslator(
            config.marian.forward, config.marian.backward, config.batch_size, generation_settings(config.marian), seed
        )
    return CachedTranslator(engine, cache) if cache is not None else engine
