"""`textclf serve`: a small HTTP service over the production ONNX model.

    GET  /health    {"status": "ok" | "degraded" | "unavailable", "version", "labels", "error"}
    POST /predict   {"texts": ["...", ...]} -> {"version", "predictions": [{"label", "probabilities"}]}

Every answer names the model version that produced it. A newly promoted model
is picked up on the next request (the production pointer is checked each
time); if it cannot be loaded the service keeps the version it has and
/health says "degraded" and why. No torch on this path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.lib.config import Params, ServeConfig
from tasks.lib.production_model import ModelLoadError, ProductionModel
from tasks.lib.text import has_visible_character


class PredictRequest(BaseModel):
    """A request: unknown fields are refused (a misspelt field must not be ignored)."""

    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, description="texts to classify")

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


def create_app(model: ProductionModel, config: ServeConfig) -> Any:
    """The FastAPI application; `config` sets the request limits and batch size."""
    from fastapi import FastAPI, HTTPException
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    app = FastAPI(title="textclf", description=__doc__)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Any, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 echoes the input back, and a lone surrogate in it cannot be encoded (a 500).
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/health")
    def health() -> JSONResponse:
        status = model.status()
        return JSONResponse(status, status_code=503 if status["status"] == "unavailable" else 200)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> dict[str, Any]:
        if len(request.texts) > config.max_texts:
            raise HTTPException(
                413, f"{len(request.texts)} texts in one request; serve.max_texts is {config.max_texts}"
            )
        too_long = [i for i, text in enumerate(request.texts) if len(text) > config.max_chars]
        if too_long:
            raise HTTPException(
                413, f"texts {too_long[:10]} are longer than serve.max_chars ({config.max_chars} characters)"
            )
        try:
            # ONNX Runtime releases the GIL: run it off the event loop so /health stays responsive.
            version, predictions = await run_in_threadpool(model.predict, request.texts, config.batch_size)
        except ModelLoadError as exc:
            raise HTTPException(503, str(exc)) from None
        return {"version": version, "predictions": [p.as_dict() for p in predictions]}

    return app


def run(params: Params, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted (uvicorn)."""
    import uvicorn

    config = params.serve
    model = ProductionModel(
        params.path("registry"), config.threads, (config.reload_retry_seconds, config.reload_retry_max_seconds)
    )
    print(f"serve: production model {model.status()}")
    uvicorn.run(create_app(model, config), host=host or config.host, port=port or config.port, log_level="info")
