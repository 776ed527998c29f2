"""Back-translation through a pivot language, behind one small interface."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Protocol

from tasks.config import PipelineError

# Apertium's plain-text mode moves words across line breaks; in HTML mode a
# paragraph is a hard boundary, so one paragraph per sentence keeps rows aligned.
_PARAGRAPH = re.compile(r"<p>(.*?)</p>", re.DOTALL)


class BackTranslator(Protocol):
    def back_translate(self, texts: Sequence[str]) -> list[str]:
        """English -> pivot -> English, one output per input, in order."""
        ...


class EngineError(PipelineError, RuntimeError):
    """The translation engine is missing or failed."""


class ApertiumTranslator:
    """Offline rule-based back-translation with Apertium (Debian `apertium-eng-spa`)."""

    def __init__(self, pivot: str = "spa", batch_size: int = 200, timeout_s: float = 300.0):
        if shutil.which("apertium") is None:
            raise EngineError("apertium is not installed: `apt-get install apertium apertium-eng-spa` "
                              "(make install does this)")
        self.forward, self.backward = f"eng-{pivot}", f"{pivot}-eng"
        self.batch_size, self.timeout_s = batch_size, timeout_s

    def _translate(self, texts: Sequence[str], pair: str) -> list[str]:
        document = "".join(f"<p>{html.escape(t, quote=False)}</p>\n" for t in texts)
        try:
            done = subprocess.run(["apertium", "-u", "-f", "html", pair], input=document, text=True,
                                  capture_output=True, timeout=self.timeout_s, check=False)
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
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start:start + self.batch_size])
            back = self._translate(self._translate(batch, self.forward), self.backward)
            # HTML mode capitalises each paragraph; keep the source's casing style.
            results.extend(b[:1].lower() + b[1:] if s[:1].islower() else b for s, b in zip(batch, back))
        return results
