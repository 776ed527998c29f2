"""Adaptive batching for the HTTP service: concurrent requests share one inference.

Requests put their texts on one bounded queue; a single worker thread takes
what is queued whenever the model is free (up to `max_batch` texts; under
load, when the last batch held several texts, it first waits at most
`max_wait_ms` for more), runs them cut into length groups and answers
every request in the batch. With one client nothing waits; with many, batches
fill by themselves while the previous one runs. Admission is decided at once,
on the event loop: a request that would not fit in the queue, or that would
wait longer than `max_queue_ms` at the measured speed behind more than a batch
of texts, is refused (429) instead of letting every request's latency grow.

Why hand-written: the servers that do this (Triton's dynamic batcher,
TorchServe, BentoML) are whole serving stacks with their own model formats and
processes; the part needed here is a queue and a thread, about 200 lines, and
it keeps one ONNX Runtime session and the registry's version semantics.

A text is pinned to the model version serving when it was admitted, and a batch
holds one version only, so a promotion under load switches answers once and
every answer names the version that produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from tasks.lib.inference.onnx_classifier import release_memory
from tasks.lib.inference.production_model import Reply, Served, replies

log = logging.getLogger("textclf.serve")

# How many recent batches the admission estimate is the median of.
_RECENT_BATCHES = 15


class Overloaded(RuntimeError):
    """The queue cannot take the request now; `retry_after` in whole seconds (HTTP's Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Stopped(RuntimeError):
    """The batcher is draining or stopped: no new work."""


@dataclass(eq=False)
class _Request:
    """One HTTP request: its texts' answers, filled in by batches, and the future its handler awaits."""

    version: str
    model: Served
    texts: list[str]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[str, list[Reply]]]
    answers: list[Reply | None] = field(default_factory=list)
    remaining: int = 0
    cancelled: bool = False

    def __post_init__(self) -> None:
        self.answers = [None] * len(self.texts)
        self.remaining = len(self.texts)


@dataclass(frozen=True)
class QueueStatus:
    texts: int
    capacity: int
    estimated_wait_ms: float
    batches: int
    mean_batch: float
    refused: int
    draining: bool
    worker_alive: bool
    memory_releases: int


class Batcher:
    """One worker thread over one queue of texts; `submit` is called from the event loop."""

    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        max_queue_ms: float,
        release_idle_seconds: float | None = None,
    ):
        self.max_batch, self.max_wait_s = max_batch, max_wait_ms / 1000
        self.max_queue, self.max_queue_s = max_queue, max_queue_ms / 1000
        # After this long with nothing queued, the last model used gives back the memory its batches left.
        self.release_idle_s = release_idle_seconds
        self._to_release: Served | None = None  # the model that ran since the last release
        self._releases = 0
        self._queue: deque[tuple[_Request, int]] = deque()  # (request, index of the text in it)
        self._ready = threading.Condition()
        self._draining = False
        # Seconds per text of the last batches; their median is the admission estimate (one
        # slow batch, a GC pause or a noisy neighbour, must not refuse the next requests).
        # Unknown (0) until the first batch: the queue bound alone applies.
        self._recent_per_text: deque[float] = deque(maxlen=_RECENT_BATCHES)
        self._seconds_per_text = 0.0
        self._batches = self._texts_done = self._refused = self._last_batch = 0
        self._thread = threading.Thread(target=self._work, name="batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish what is queued, then end the worker."""
        with self._ready:
            self._draining = True
            self._ready.notify_all()
        self._thread.join(timeout)

    @property
    def draining(self) -> bool:
        return self._draining

    def status(self) -> QueueStatus:
        queued = len(self._queue)
        return QueueStatus(
            texts=queued,
            capacity=self.max_queue,
            estimated_wait_ms=round(queued * self._seconds_per_text * 1000, 1),
            batches=self._batches,
            mean_batch=round(self._texts_done / self._batches, 2) if self._batches else 0.0,
            refused=self._refused,
            draining=self._draining,
            worker_alive=self._thread.is_alive(),
            memory_releases=self._releases,
        )

    async def predict(self, version: str, model: Served, texts: list[str]) -> tuple[str, list[Reply]]:
        """Queue `texts` for `version` and wait for their answers (in the order of `texts`).

        Raises:
            Overloaded: the queue is full or the wait would pass `max_queue_ms`.
            Stopped: the service is draining.
        """
        loop = asyncio.get_running_loop()
        request = _Request(version, model, texts, loop, loop.create_future())
        with self._ready:
            if self._draining:
                raise Stopped("the service is shutting down")
            refusal = self.refusal(len(texts))
            if refusal:
                raise refusal
            self._queue.extend((request, i) for i in range(len(texts)))
            self._ready.notify()
        try:
            return await request.future
        except asyncio.CancelledError:
            request.cancelled = True  # its queued texts are skipped, not computed
            raise

    def refusal(self, texts: int = 1) -> Overloaded | None:
        """Why `texts` more texts cannot be queued now (counted as a refusal), or None.

        The wait is that of the texts ahead: an idle server takes any request within the limits.
        """
        queued = len(self._queue)
        wait_s = queued * self._seconds_per_text
        # Texts that fit in the next batch wait for the running one and their own whatever
        # is decided: refusing them would make no one faster, so the time bound starts beyond.
        in_time = queued + texts <= self.max_batch or wait_s <= self.max_queue_s
        if queued + texts <= self.max_queue and in_time:
            return None
        self._refused += 1
        return Overloaded(
            f"busy: {queued} texts queued (serve.max_queue {self.max_queue}), "
            f"about {wait_s * 1000:.0f} ms of work (serve.max_queue_ms {self.max_queue_s * 1000:.0f})",
            retry_after=max(1, math.ceil(wait_s)),
        )

    def _take(self) -> list[tuple[_Request, int]] | None:
        """The next batch: up to max_batch queued texts of one version; None once drained."""
        with self._ready:
            while not self._queue:
                if self._draining:
                    return None
                idle = self.release_idle_s if self._to_release is not None else None
                if not self._ready.wait(idle) and not self._queue and not self._draining:
                    return []  # idle long enough: _work releases the memory, outside the lock
            # Wait for more only under load (the last batch held several texts): a lone
            # client never pays max_wait_ms.
            if self.max_wait_s and self._last_batch > 1 and len(self._queue) < self.max_batch:
                deadline = time.monotonic() + self.max_wait_s
                while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._ready.wait(left)
            version = self._queue[0][0].version
            batch: list[tuple[_Request, int]] = []
            while self._queue and len(batch) < self.max_batch and self._queue[0][0].version == version:
                item = self._queue.popleft()
                if not item[0].cancelled:
                    batch.append(item)
            return batch

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            if batch:
                try:
                    self._run(batch)
                except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                    self._fail({request for request, _ in batch}, exc)
            elif self._to_release is not None:
                self._release()

    def _release(self) -> None:
        """The idle worker gives back the memory of the last model's batches (on this thread: no batch runs)."""
        model, self._to_release = self._to_release, None
        try:
            release_memory(model)
            self._releases += 1
        except Exception:  # a model that cannot shrink still answers: the worker goes on
            log.exception("serve: giving back the memory of idle batches failed")

    def _run(self, batch: list[tuple[_Request, int]]) -> None:
        started = time.perf_counter()
        model = batch[0][0].model
        if self.release_idle_s is not None:
            self._to_release = model
        try:
            # One length-sorted pass: each inference pads only to its own longest text.
            texts = [request.texts[i] for request, i in batch]
            answered = replies(model, texts, self.max_batch, cut=True)
        except Exception as exc:  # noqa: BLE001 - any failure belongs to these requests, not to the worker
            self._fail({request for request, _ in batch}, exc)
            return
        finished = _fill(batch, answered)
        # Resolve every finished request in one hand-off per event loop.
        for loop, requests in _by_loop(finished).items():
            _call_soon(loop, _resolve, requests)
        elapsed = time.perf_counter() - started
        self.measured(elapsed, len(batch))
        self._batches += 1
        self._last_batch = len(batch)
        self._texts_done += len(batch)

    def measured(self, seconds: float, texts: int) -> None:
        """Count a batch of `texts` that took `seconds` into the admission estimate."""
        self._recent_per_text.append(seconds / texts)
        self._seconds_per_text = statistics.median(self._recent_per_text)

    def _fail(self, requests: set[_Request], exc: Exception) -> None:
        with self._ready:  # drop their other texts still queued
            self._queue = deque(item for item in self._queue if item[0] not in requests)
        for request in requests:
            _call_soon(request.loop, _set_exception, request.future, exc)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any, *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these answers
        loop.call_soon_threadsafe(callback, *args)


def _fill(batch: list[tuple[_Request, int]], answered: list[Reply]) -> list[_Request]:
    """Store each text's reply in its request; returns the requests now complete."""
    finished = []
    for (request, i), prediction in zip(batch, answered, strict=True):
        request.answers[i] = prediction
        request.remaining -= 1
        if request.remaining == 0:
            finished.append(request)
    return finished


def _by_loop(requests: list[_Request]) -> dict[asyncio.AbstractEventLoop, list[_Request]]:
    grouped: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
    for request in requests:
        grouped.setdefault(request.loop, []).append(request)
    return grouped


def _resolve(requests: list[_Request]) -> None:
    for request in requests:
        if not request.future.done():
            answers = [answer for answer in request.answers if answer is not None]
            request.future.set_result((request.version, answers))


def _set_exception(future: asyncio.Future[Any], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
