"""`textclf serve`: a small HTTP service over the production ONNX model.

    GET  /health    {"status": "ok" | "degraded" | "unavailable" | "draining", "version", "labels", "queue", ...}
    POST /predict   {"texts": [...], "labels"?: [...]} -> {"request_id", "version", "predictions": [...]}
    POST /feedback  {"request_id", "index"?: 0, "label" | "entities"} -> 202: the truth about an answered
                    text: its label, or a tagger's entities [{"start", "end", "type"}]
    GET  /metrics   Prometheus text format (tasks/apps/serving_metrics.py)

Concurrent requests are batched on the server (tasks/apps/batcher.py); when the
queue cannot take a request it is answered 429 with Retry-After at once. Every
answer names the model version that produced it, and a client that lists the
labels it knows gets 409, not predictions, from a version with other labels
(a label set changes only with the version). A newly promoted model is
picked up within `serve.reload_check_seconds` (a background thread reads the
production pointer); if it cannot be loaded the service keeps the version it
has and /health says "degraded" and why; a start while production's files do not verify
serves its rollback target, degraded, until they do (`fallback_for`). Body size and time limits
are applied before anything is parsed; every JSON body is then parsed strictly (`parse_json`:
a malformed one is a 422, never a 500), and no error answer repeats the request's content.
Feedback about a request id this service did not answer is kept, marked unmatched.
Every answer is handed to the prediction log (tasks/lib/monitoring/prediction_log.py), which
writes it off the request path. No torch on this path.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.apps.api_page import add_api_page
from tasks.apps.batcher import Batcher, Overloaded, Stopped
from tasks.apps.probes import ProbeAnswer, ProbeServer, liveness, readiness
from tasks.apps.serving_metrics import ServiceMetrics
from tasks.lib.config import ServeConfig
from tasks.lib.data.sentences import entity_signature
from tasks.lib.data.text import has_visible_character
from tasks.lib.inference.onnx_tagger import Tagged, Tagger
from tasks.lib.inference.production_model import (
    ModelLoadError,
    Prediction,
    ProductionModel,
    reply_record,
    served_labels,
)
from tasks.lib.inference.serving_settings import ServingSettings
from tasks.lib.monitoring.prediction_log import FEEDBACK, Answer, Feedback, PredictionLog, log_location

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger("textclf.serve")
access_log = logging.getLogger("textclf.access")
REQUEST_ID = "textclf.request_id"  # the ASGI scope's key for the id RequestGuard gives each request


class PredictRequest(BaseModel):
    """A request: unknown fields are refused (a misspelt field must not be ignored)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="texts to classify")
    labels: list[str] | None = Field(
        None, description="the labels this client knows: a version that predicts others answers 409, not predictions"
    )

    @field_validator("texts")
    @classmethod
    def _texts_are_text(cls, texts: list[str]) -> list[str]:
        """A text the tokenizer cannot encode, or with nothing visible in it, is the client's mistake (422)."""
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"text {i} is not valid Unicode (a lone surrogate)") from None
            if not has_visible_character(text):
                raise ValueError(f"text {i} has no visible character (empty, spaces or control characters)")
        return texts


class PredictionOut(BaseModel):
    label: str
    probabilities: dict[str, float]


class EntityOut(BaseModel):
    start: int = Field(description="offset of the mention's first character in the text")
    end: int = Field(description="offset after its last character: text[start:end] is the mention")
    type: str
    score: float = Field(description="the mean probability of its words' predicted tags")
    text: str


class TaggedTextOut(BaseModel):
    text: str
    entities: list[EntityOut]
    version: str


class PredictResponse(BaseModel):
    request_id: str = Field(description="this answer's id in the prediction log (POST /feedback takes it)")
    version: str = Field(description="the registry version that produced every prediction of this answer")
    predictions: list[PredictionOut] | list[TaggedTextOut] = Field(
        description="one per text, in the order of the request: a label, or a token classifier's entities"
    )


class EntitySpan(BaseModel):
    model_config = ConfigDict(extra="ignore")  # a served entity (score, text) can be sent back as it came
    start: int = Field(ge=0, description="offset of the mention's first character in the text")
    end: int = Field(gt=0, description="offset after its last character")
    type: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _ordered(self) -> EntitySpan:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the request_id of the /predict answer")
    index: int = Field(0, ge=0, lt=10_000, description="which text of that request (0: the first)")
    label: str | None = Field(None, min_length=1, max_length=200, description="a classified text's true label")
    entities: list[EntitySpan] | None = Field(
        None, max_length=1000, description="a tagged text's true entities (all of them; [] for none)"
    )

    @model_validator(mode="after")
    def _one_truth(self) -> FeedbackRequest:
        if (self.label is None) == (self.entities is None):
            raise ValueError("give either `label` (a classifier's answer) or `entities` (a tagger's), not both")
        spans = sorted((e.start, e.end) for e in self.entities or [])
        for (_, end), (start, _) in itertools.pairwise(spans):
            if start < end:
                raise ValueError(f"entities overlap: one ends at {end}, the next starts at {start}")
        return self


class QueueOut(BaseModel):
    texts: int = Field(description="texts waiting for the model")
    capacity: int = Field(description="serve.max_queue")
    estimated_wait_ms: float
    batches: int = Field(description="inferences run since start")
    mean_batch: float = Field(description="texts per inference since start")
    refused: int = Field(description="requests answered 429 since start")
    draining: bool
    worker_alive: bool
    memory_releases: int = Field(
        description="times the idle worker gave back the memory its batches left (serve.release_idle_seconds)"
    )


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "unavailable", "draining"]
    version: str | None
    labels: list[str] | None = None
    verified: bool | None = Field(None, description="false: a version registered before records listed file hashes")
    variant: str | None = Field(None, description="the registered variant serving (serve.variant)")
    variant_chosen_by: str | None = Field(None, description="gate, serve.variant, or fastest on this host")
    variant_timings_ms: dict[str, float] | None = Field(
        None, description="serve.variant auto: one batch's median time per variant, measured here at load"
    )
    engine: str | None = Field(None, description="the runtime, its version and precision, e.g. openvino 2026.4.1 bf16")
    error: str | None = None
    fallback_for: str | None = Field(
        None,
        description="the production version that cannot be served (its files do not verify) while `version`, "
        "its rollback target, serves instead (status degraded)",
    )
    queue: QueueOut


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]]


# The longest number a request may hold: Python refuses to convert integers of over 4300 digits
# (a ValueError, once a 500), and no field of this API needs more than a few digits.
MAX_NUMBER_CHARS = 100
# How many answers' request ids (and text counts) the service remembers, to tell feedback about an
# answer it gave from feedback about nothing (about 5 MB).
RECENT_ANSWERS = 65_536


class BodyError(ValueError):
    """A request body that is not strict JSON: `reason` names the problem, never the content."""

    def __init__(self, reason: str, pos: int | None = None):
        super().__init__(reason)
        self.reason, self.pos = reason, pos


def _no_constant(name: str) -> Any:
    raise BodyError(f"{name} is not JSON (JavaScript's NaN and Infinity are not numbers there)")


def _bounded_int(digits: str) -> int:
    if len(digits) > MAX_NUMBER_CHARS:
        raise BodyError(f"a number of {len(digits)} characters (at most {MAX_NUMBER_CHARS})")
    return int(digits)


def _finite_float(digits: str) -> float:
    if len(digits) > MAX_NUMBER_CHARS:
        raise BodyError(f"a number of {len(digits)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(digits)
    if not math.isfinite(value):
        raise BodyError("a number out of range (it overflows a 64-bit float)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Refused, not "the last one wins": a proxy that reads the first could check another request than this one.
    found = dict(pairs)
    if len(found) != len(pairs):
        raise BodyError("an object has a key twice")
    return found


def parse_json(body: bytes) -> Any:
    """A request body as strict JSON (RFC 8259): UTF-8, no NaN or Infinity, no duplicate keys, no
    number over MAX_NUMBER_CHARS characters, nesting within Python's recursion limit.

    Raises:
        BodyError: why it is not, and where when known (a character offset).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"not UTF-8 (byte {exc.start})", exc.start) from None
    try:
        return json.loads(
            text,
            parse_constant=_no_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
            object_pairs_hook=_unique_keys,
        )
    except json.JSONDecodeError as exc:
        raise BodyError(exc.msg, exc.pos) from None
    except RecursionError:
        raise BodyError("nested too deeply") from None
    except BodyError:
        raise
    except ValueError as exc:  # any other conversion the decoder refuses: named by its type, not its text
        raise BodyError(f"not JSON ({type(exc).__name__})") from None


def short(value: object, limit: int = 40) -> str:
    """A short, escaped form of a client's value for an error message: ASCII only, no markup, at most `limit`."""
    text = ascii(str(value))[1:-1]
    text = text.replace("<", "\\x3c").replace(">", "\\x3e").replace("&", "\\x26")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecentAnswers:
    """The request ids of the last `size` answers and how many texts each had (oldest forgotten first)."""

    def __init__(self, size: int = RECENT_ANSWERS):
        self.size = size
        self._texts: OrderedDict[bytes, int] = OrderedDict()

    def add(self, request_id: str, texts: int) -> None:
        self._texts[bytes.fromhex(request_id)] = texts
        if len(self._texts) > self.size:
            self._texts.popitem(last=False)

    def texts(self, request_id: str) -> int | None:
        """How many texts that answer had; None: not an answer remembered here."""
        return self._texts.get(bytes.fromhex(request_id))


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # json.dumps on plain dicts: FastAPI's encoder walks the answer again for nothing.
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def create_app(
    model: ProductionModel,
    config: ServeConfig,
    prediction_log: PredictionLog | None = None,
    feedback_log: PredictionLog | None = None,
    count_metrics: bool = True,
) -> ASGIApp:
    """The ASGI application: FastAPI routes behind the request guard (limits and timeouts).

    The batcher and the pointer watcher run while the app's lifespan does (uvicorn, or a
    `with TestClient(app)` block); the logs, when given, are closed (flushed) with it.
    """
    batcher = Batcher(
        config.max_batch, config.max_wait_ms, config.max_queue, config.max_queue_ms, config.release_idle_seconds
    )
    stop_watching = threading.Event()
    recent = RecentAnswers()

    def state() -> dict[str, Any]:
        """What /metrics reads at scrape time."""
        choice = model.choice
        values: dict[str, Any] = {
            "version": model.version,
            "variant": choice.variant if choice else None,
            "queue_texts": batcher.status().texts,
            "degraded": model.error is not None,
            "fallback_for": model.fallback_for,
            "created": model.created,
        }
        if prediction_log is not None:
            values.update(
                log_written=prediction_log.written,
                log_dropped=prediction_log.dropped,
                log_failed_writes=prediction_log.failed_writes,
            )
        return values

    metrics = ServiceMetrics(state, count_metrics)

    def watch_pointer() -> None:
        while not stop_watching.wait(config.reload_check_seconds):
            try:
                before, stood_in_for = model.choice, model.fallback_for
                model.current()  # loads a newly promoted version off the event loop
                if model.choice is not before or model.fallback_for != stood_in_for:
                    log.info("serve: now serving %s", model.status(refresh=False))
            except ModelLoadError:
                pass  # nothing to serve yet: status() says why; keep watching for a promotion
            except Exception:  # the watcher must outlive any one bad check (logged)
                log.exception("serve: reading the production pointer failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        first = model.status()  # the first load, before the first request
        if first["status"] != "ok":  # said in the log as well as in /health and /metrics
            log.warning("serve: %s: %s", first["status"], first["error"])
        has_visible_character("warm")  # builds its pattern once (0.1 s), not on the first request
        watcher = threading.Thread(target=watch_pointer, name="pointer-watcher", daemon=True)
        probes = None
        if config.probe_port is not None:  # bound before anything starts: a port taken fails the start
            probes = ProbeServer(config.host, config.probe_port, ready)
            log.info("serve: /livez and /readyz also on port %d (serve.probe_port)", probes.port)
        batcher.start()
        watcher.start()
        if probes is not None:
            probes.start()
        yield
        if probes is not None:
            probes.stop()
        # uvicorn has already let the requests in flight finish (serve.drain_seconds).
        batcher.stop(timeout=config.drain_seconds)
        stop_watching.set()
        for open_log in (prediction_log, feedback_log):
            if open_log is not None:
                open_log.close()

    # FastAPI's own /docs loads its scripts from a CDN: this one is served from the installed copies.
    app = FastAPI(title="textclf", description=__doc__, lifespan=lifespan, docs_url=None, redoc_url=None)
    add_api_page(app)
    errors = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in (
            (409, "the serving version predicts other labels than the request lists"),
            (413, "over serve.max_texts, serve.max_chars or the body limit"),
            (429, "busy: retry after the Retry-After header's seconds"),
            (503, "no model can serve, or the service is shutting down"),
        )
    }

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, exc: RequestValidationError) -> Response:
        fields = FeedbackRequest if request.url.path == "/feedback" else PredictRequest
        return _invalid(exc.errors(), fields=list(fields.model_fields))

    def ready() -> ProbeAnswer:
        return readiness(model.status(refresh=False), batcher.status())

    @app.get("/livez", response_model=dict[str, str])
    async def livez() -> Response:
        """The process answers (a liveness probe). With serve.probe_port, also on that port, where a flood of
        requests cannot delay it."""
        code, body = liveness()
        return _json(body, code)

    @app.get("/readyz", responses={503: {"description": "not ready, and why"}})
    async def readyz() -> Response:
        """A verified model is loaded and the queue can admit a request (a readiness probe): 200, else 503."""
        code, body = ready()
        return _json(body, code)

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> Response:
        # On the event loop and without I/O: it answers whatever the load.
        status = model.status(refresh=False)
        queue = batcher.status()
        if queue.draining:
            status["status"] = "draining"
        elif not queue.worker_alive:
            status.update(status="unavailable", error="the batcher's worker thread has stopped")
        status["queue"] = queue.__dict__
        return _json(status, 503 if status["status"] in ("unavailable", "draining") else 200)

    # Each error's description given: the default is Python's phrase for the code, which 3.13 changed
    # (422 "Unprocessable Entity" became "Unprocessable Content"), and the API page must not differ by version.
    feedback_errors = {
        422: {"model": ErrorResponse, "description": "a label or entity types the version does not predict"},
        503: {"model": ErrorResponse, "description": "no model can serve, or the service is shutting down"},
    }

    @app.post("/feedback", status_code=202, responses=feedback_errors)  # type: ignore[arg-type]
    async def feedback(request: FeedbackRequest) -> Response:
        """The true label of a text an answer classified; the monitoring report's live accuracy joins it."""
        if feedback_log is None:
            return _json(
                {"detail": "feedback is not recorded here (monitor.log is false, or serve --no-monitoring)"}, 503
            )
        try:
            version, serving = model.serving()
        except ModelLoadError as exc:
            return _json({"detail": str(exc)}, 503)
        labels, tagger = served_labels(serving), isinstance(serving, Tagger)
        if tagger != (request.entities is not None):
            wanted = "`entities`: the text's true entities" if tagger else "a `label`"
            return _json({"detail": f"{version} is a {serving.info.task} model: its feedback is {wanted}"}, 422)
        given = [str(request.label)] if request.entities is None else [e.type for e in request.entities]
        unknown = sorted({label for label in given if label not in labels})
        if unknown:
            # The allowed values, not the client's: an error message is no place to reflect input.
            what = f"{len(unknown)} entity types are" if tagger else "the label is"
            return _json({"detail": f"{what} not among those {version} predicts: {labels}"}, 422)
        answered = recent.texts(request.request_id)
        if answered is not None and request.index >= answered:
            detail = f"index {request.index}: that answer had {answered} texts (index 0 to {answered - 1})"
            return _json({"detail": detail}, 422)
        entities = None if request.entities is None else [e.model_dump() for e in request.entities]
        label = entity_signature(given) if tagger else str(request.label)
        matched = answered is not None
        truth = Feedback(request.request_id, request.index, label, time.time(), version, entities, matched)
        if not feedback_log.record(truth):
            return _json({"detail": "too much feedback waiting to be written; retry later"}, 429, {"Retry-After": "1"})
        body: dict[str, Any] = {"request_id": request.request_id, "index": request.index, "label": label}
        if entities is not None:
            body["entities"] = entities
        body["matched"] = matched
        if not matched:
            # Kept (another replica, or this one before a restart, may have answered it), but it counts
            # only where the prediction log holds that answer: live accuracy joins feedback to answers.
            body["note"] = (
                "this service did not give that answer in its last answers: the feedback is kept, and "
                "counts towards live accuracy only if the prediction log holds that request_id"
            )
        return _json(body, 202)

    @app.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def answer(request: PredictRequest, request_id: str) -> Response:
        """/predict's answer to a valid request (from the route below, or the guard's fast path); `request_id`:
        the id the guard gave the request (in the access line and the X-Request-ID header too)."""
        texts = request.texts
        if len(texts) > config.max_texts:
            return _json({"detail": f"{len(texts)} texts in one request; serve.max_texts is {config.max_texts}"}, 413)
        too_long = [i for i, text in enumerate(texts) if len(text) > config.max_chars]
        if too_long:
            return _json(
                {"detail": f"texts {too_long[:10]} are longer than serve.max_chars ({config.max_chars} characters)"},
                413,
            )
        try:
            version, serving = model.serving()
            version, predictions = await batcher.predict(version, serving, texts)
        except ModelLoadError as exc:
            return _json({"detail": str(exc)}, 503)
        except Overloaded as exc:
            return _json({"detail": str(exc)}, 429, {"Retry-After": str(exc.retry_after)})
        except Stopped as exc:
            return _json({"detail": str(exc)}, 503, {"Retry-After": "1"})
        known = served_labels(serving)
        if request.labels is not None and set(request.labels) != set(known):
            # The version's labels, not the request's (no input is reflected in an error).
            detail = f"{version} predicts {known}, not the labels this request lists"
            return _json({"detail": detail, "version": version, "labels": known}, 409)
        recent.add(request_id, len(texts))
        if isinstance(serving, Tagger):
            tagged = [cast(Tagged, reply) for reply in predictions]
            metrics.found(version, [entity.type for answer in tagged for entity in answer.entities])
            body = [reply_record(text, version, reply) for text, reply in zip(texts, tagged, strict=True)]
        else:
            classified = [cast(Prediction, reply) for reply in predictions]
            metrics.classified(version, [p.label for p in classified])
            body = [p.as_dict() for p in classified]
        if prediction_log is not None:
            choice = model.choice
            prediction_log.record(
                Answer(request_id, time.time(), version, choice.variant if choice else None, texts, predictions)
            )
        return _json({"request_id": request_id, "version": version, "predictions": body})

    # Declared for the schema (/docs) and for requests the fast path leaves to FastAPI.
    @app.post("/predict", response_model=PredictResponse, responses=errors)  # type: ignore[arg-type]
    async def predict(request: PredictRequest, raw: Request) -> Response:
        return await answer(request, request_id_of(raw.scope))

    return RequestGuard(app, config, batcher.refusal, answer, metrics)


def _invalid(errors: Sequence[Any], prefix: tuple[str, ...] = (), fields: Sequence[str] = ()) -> Response:
    """422 naming where and why, never the input (FastAPI's own 422 echoes it, and a lone surrogate
    in it cannot even be encoded); a client's field name only in a short, escaped form, with the
    fields there are (`fields`)."""
    found = []
    for error in errors:
        loc = [item if isinstance(item, int) else short(item) for item in (*prefix, *error["loc"])]
        message = error["msg"]
        if error["type"] == "extra_forbidden" and fields:
            message = f"{message}: the fields are {', '.join(fields)}"
        found.append({"loc": loc, "msg": message, "type": error["type"]})
    return _json({"detail": found}, 422)


def _body_invalid(exc: BodyError) -> Response:
    """422 for a body that is not strict JSON (parse_json), as FastAPI words its own: type json_invalid."""
    loc = ["body"] if exc.pos is None else ["body", exc.pos]
    return _json({"detail": [{"loc": loc, "msg": f"JSON decode error: {exc.reason}", "type": "json_invalid"}]}, 422)


class RequestGuard:
    """Limits before parsing: the body's size (declared or streamed) and time, the request's time,
    and a full queue (`refusal`: 429 before JSON and validation, which cost more than the answer).

    A pure ASGI wrapper so that nothing reads an oversized or slow body: FastAPI
    would read it whole before any check runs.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: ServeConfig,
        refusal: Callable[[], Overloaded | None],
        predict: Callable[[PredictRequest, str], Awaitable[Response]],
        metrics: ServiceMetrics,
    ):
        self.app, self.config, self.refusal, self.predict = app, config, refusal, predict
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = scope[REQUEST_ID] = uuid.uuid4().hex

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seconds = time.perf_counter() - started
                self.metrics.answered(scope["path"], message["status"], seconds)
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                if self.config.access_log:
                    log_access(scope, message["status"], seconds, request_id)
            await send(message)

        await self._guarded(scope, receive, counted_send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.config.max_body_bytes
        too_large = f"the body is over {limit} bytes (serve.max_texts x serve.max_chars)"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, 413, too_large)
            return
        body = bytearray()
        # asyncio.timeout, not wait_for: no task per receive() (that cost shows at one connection).
        try:
            async with asyncio.timeout(self.config.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > limit or not message.get("more_body"):
                        break
        except TimeoutError:
            seconds = self.config.body_timeout_seconds
            await _refuse(send, 408, f"the body took over serve.body_timeout_seconds ({seconds} s)")
            return
        if len(body) > limit:
            await _refuse(send, 413, too_large)
            return
        busy = self.refusal()
        if busy:
            await _refuse(send, 429, str(busy), keep_alive=True, headers={"retry-after": str(busy.retry_after)})
            return
        content = bytes(body)
        if _is_json(scope["headers"]):
            # Every JSON body is parsed here, strictly, whatever the route: a body json.loads cannot
            # convert (a 5000-digit number) must be a 422, not FastAPI's 400 or an exception (500).
            try:
                parsed = parse_json(content)
            except BodyError as exc:
                await self._answer(_body_invalid(exc), scope, _replay(content, receive), send)
                return
            # The one hot route skips FastAPI's routing, middleware and dependency solving (half the
            # event loop's time per request under load, measured with py-spy); same model, same answers.
            if scope["method"] == "POST" and scope["path"] == "/predict":
                await self._answer(self._predict_fast(parsed), scope, _replay(content, receive), send)
                return
        await self._answer(self.app, scope, _replay(content, receive), send)

    def _predict_fast(self, parsed: Any) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # Validation of the parsed body, as FastAPI does (pydantic's own JSON parser would call
            # a lone surrogate "invalid JSON" instead of naming the text).
            try:
                request = PredictRequest.model_validate(parsed)
            except ValidationError as exc:
                response = _invalid(exc.errors(include_input=False), ("body",), list(PredictRequest.model_fields))
            else:
                response = await self.predict(request, request_id_of(scope))
            await response(scope, receive, send)

        return app

    async def _answer(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            async with asyncio.timeout(self.config.request_timeout_seconds):
                await app(scope, receive, tracked_send)
        except TimeoutError:
            if not started:
                seconds = self.config.request_timeout_seconds
                await _refuse(send, 503, f"no answer within serve.request_timeout_seconds ({seconds} s)")


def request_id_of(scope: Scope) -> str:
    """The id RequestGuard gave the request (a new one where the app runs without the guard)."""
    return cast(str, scope.get(REQUEST_ID) or uuid.uuid4().hex)


def log_access(scope: Scope, status: int, seconds: float, request_id: str) -> None:
    """One access line (serve.access_log): never the body, so never a request's texts; its fields as
    keys in JSON lines (--log-format json)."""
    client = scope.get("client")
    fields = {
        "request_id": request_id,
        "client": f"{client[0]}:{client[1]}" if client else "-",
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
    }
    line = '%(client)s "%(method)s %(path)s" %(status)d %(duration_ms).1f ms request_id=%(request_id)s'
    access_log.info(line, fields, extra=fields)


def _is_json(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the request says its body is JSON, as FastAPI reads it: application/json or application/*+json."""
    for name, value in headers:
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that gives the body read already, then waits for the client's disconnect."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _refuse(
    send: Send, status: int, detail: str, keep_alive: bool = False, headers: dict[str, str] | None = None
) -> None:
    """An error answer; it closes the connection unless the body was read whole (`keep_alive`)."""
    body = json.dumps({"detail": detail}).encode()
    fields = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
    if not keep_alive:
        fields["connection"] = "close"
    encoded = [(name.encode(), value.encode()) for name, value in fields.items()]
    await send({"type": "http.response.start", "status": status, "headers": encoded})
    await send({"type": "http.response.body", "body": body})


def protocol_with_header_timeout(seconds: float) -> type:
    """uvicorn's HTTP protocol, closing a connection whose request headers take over `seconds`.

    uvicorn times out idle keep-alive connections but not a client that sends
    half a request line and stops; this timer runs from the connection's start
    and from each response until the next request's headers are complete.
    """
    try:  # httptools (C) parses requests several times faster than h11 (pure Python)
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Base
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base  # type: ignore[assignment]

    class HeaderTimeoutProtocol(Base):
        _timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._timer = self.loop.call_later(seconds, self._headers_late)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _headers_late(self) -> None:
            waiting = self.cycle is self._armed_for and (self.cycle is None or self.cycle.response_complete)
            if waiting and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._armed_for:  # a new request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderTimeoutProtocol


def run(settings: ServingSettings, host: str | None = None, port: int | None = None, monitoring: bool = True) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn), then drain.

    `monitoring` False: no prediction log and no counting in /metrics (what benchmarks/serving.py
    compares with, to measure their cost).
    """
    config = settings.serve
    model = ProductionModel(
        settings.registry,
        config.threads,
        (config.reload_retry_seconds, config.reload_retry_max_seconds),
        config.variant,
        fall_back=True,  # a restart while production's files do not verify serves its rollback target
    )
    log.info("serve: production model %s", model.status())
    prediction_log = feedback_log = None
    log_config = settings.prediction_log
    if not monitoring:
        log.info("serve: --no-monitoring: no prediction log, /metrics counts nothing")
    elif log_config.log:
        location = log_location(log_config, settings.registry)
        prediction_log = PredictionLog(location, log_config)
        feedback_log = PredictionLog(log_location(log_config, settings.registry, FEEDBACK), log_config)
        texts = "with" if log_config.log_text else "without"
        log.info("serve: logging every prediction to %s (%s the texts: monitor.log_text)", location, texts)
    log.info(
        f"serve: batches of up to {config.max_batch} texts (waiting at most {config.max_wait_ms} ms), "
        f"queue {config.max_queue} texts / {config.max_queue_ms} ms, "
        f"ONNX Runtime threads {config.threads or 'all cores'}"
    )
    import uvicorn

    app = create_app(model, config, prediction_log, feedback_log, monitoring)
    uvicorn.Server(server_config(app, config, host, port)).run()


def server_config(app: ASGIApp, config: ServeConfig, host: str | None = None, port: int | None = None) -> Any:
    """uvicorn's configuration for `app`: header timeout, graceful drain, access log as `config` says."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host or config.host,
        port=port or config.port,
        http=protocol_with_header_timeout(config.header_timeout_seconds),
        timeout_graceful_shutdown=math.ceil(config.drain_seconds),
        # Logging as tasks.lib.logs set it up (text or JSON lines, the level): uvicorn's loggers
        # propagate to it. Its access log is off: RequestGuard writes one with the request id.
        log_config=None,
        log_level=None,
        access_log=False,
    )
