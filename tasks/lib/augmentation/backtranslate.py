"""Back-translation through a pivot language, behind one small interface, with a cache.

Engines: Apertium (offline, rule-based, CPU) and MarianMT through transformers
(batched generation; fp16/bf16 on CUDA). Both translate English -> pivot ->
English; `CachedTranslator` keeps each result under a key made of the text and
the engine's settings, so retraining on grown data translates only new rows.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from tasks.lib.augmentation.errors import EngineError
from tasks.lib.config import BackTranslationConfig, MarianConfig

# Apertium's plain-text mode moves words across line breaks; in HTML mode a
# paragraph is a hard boundary, so one paragraph per sentence keeps rows aligned.
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.DOTALL)
APERTIUM_MODES = Path("/usr/share/apertium/modes")


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

    def _translate(self, texts: Sequence[str], pair: str) -> list[str]:
        document = "".join(f"<p>{html.escape(t, quote=False)}</p>\n" for t in texts)
        try:
            done = subprocess.run(
                ["apertium", "-u", "-f", "html", pair],
                input=document,
                text=True,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"apertium {pair} timed out after {self.timeout_s}s") from exc
        if done.returncode != 0:
            raise EngineError(f"apertium {pair} failed ({done.returncode}): {done.stderr.strip()[:500]}")
        out = [html.unescape(" ".join(p.split())) for p in _PARAGRAPH.findall(done.stdout)]
        if len(out) != len(texts):
            raise EngineError(f"apertium {pair} returned {len(out)} sentences for {len(texts)}")
        return out

    def back_translate(self, texts: Sequence[str]) -> list[str]:
        results: list[str] = []
        for start in tqdm(
            range(0, len(texts), self.batch_size), desc="apertium", disable=len(texts) <= self.batch_size
        ):
            batch = list(texts[start : start + self.batch_size])
            back = self._translate(self._translate(batch, self.forward), self.backward)
            # HTML mode capitalises each paragraph; keep the source's casing style.
            results.extend(b[:1].lower() + b[1:] if s[:1].islower() else b for s, b in zip(batch, back, strict=True))
        return results


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
