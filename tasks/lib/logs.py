"""One logging setup for the command line, the stages, the flows and the server (docs/guides/operations.md#logs).

`--log-format` / TEXTCLF_LOG_FORMAT chooses the lines: `text` (time, level, logger, message) or
`json` (one JSON object per line: python-json-logger's formatter, with a record's `extra` fields as
keys, e.g. an access line's request_id). `--log-level` / TEXTCLF_LOG_LEVEL chooses the level. Both
are put into the environment, so what a command starts (DVC and its stages, a temporary Prefect
server, the flows) logs the same way, and Prefect's own console lines follow (its `json`
formatter, its level). A stage that a flow runs writes `relay` lines (level and message): the flow
passes each into its run's log at that level, which adds the time and, in JSON, the run's ids.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal, cast, get_args

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from tasks.lib.errors import PipelineError

LogFormat = Literal["text", "json", "relay"]
FORMATS: tuple[str, ...] = ("text", "json")  # what a person chooses; `relay` is the flows' own
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT_VARIABLE = "TEXTCLF_LOG_FORMAT"
LEVEL_VARIABLE = "TEXTCLF_LOG_LEVEL"
TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
RELAY = "%(levelname)s %(message)s"
# Never below WARNING: httpx logs each request's whole URL at INFO, and a webhook's URL is its password.
QUIET = ("httpx", "httpcore")


class LogSettingError(PipelineError):
    """A log format or level that does not exist (the message lists those that do)."""


def chosen(log_format: str | None = None, level: str | None = None) -> tuple[LogFormat, str]:
    """The format and level: the arguments, else the environment, else text at INFO; checked."""
    fmt = (log_format or os.environ.get(FORMAT_VARIABLE) or "text").strip().lower()
    if fmt not in get_args(LogFormat):
        raise LogSettingError(f"log format {fmt!r} (--log-format or {FORMAT_VARIABLE}): choose {' or '.join(FORMATS)}")
    name = (level or os.environ.get(LEVEL_VARIABLE) or "INFO").strip().upper()
    if name not in LEVELS:
        raise LogSettingError(
            f"log level {name!r} (--log-level or {LEVEL_VARIABLE}): choose one of {', '.join(LEVELS)}"
        )
    return cast(LogFormat, fmt), name


class JsonLines(JsonFormatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message and the record's extra
    fields. Its arguments are those logging.config passes any formatter class, and are ignored, so that
    Prefect's logging configuration can name it (PREFECT_LOGGING_FORMATTERS_JSON_CLASS)."""

    def __init__(self, fmt: object = None, datefmt: object = None, style: object = "%", *rest: object, **more: object):
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],  # uvicorn's message again, with terminal colours
        )


def formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of a format's lines."""
    if log_format == "json":
        return JsonLines()
    return logging.Formatter(RELAY if log_format == "relay" else TEXT)


class _Handler(logging.StreamHandler):
    """This setup's handler on the root logger (so a second call replaces it instead of adding one). It
    writes to whatever sys.stderr is when a record comes, not to the one it was made with (which a test
    harness, or a caller's redirection, may have closed since)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # StreamHandler's __init__ and setStream: always the current sys.stderr


def configure_logging(log_format: str | None = None, level: str | None = None) -> tuple[LogFormat, str]:
    """Log to stderr in `log_format` at `level` (see `chosen`), for this process and those it starts.

    Returns:
        The format and level in force.
    """
    level_asked = level or os.environ.get(LEVEL_VARIABLE)
    fmt, name = chosen(log_format, level)
    os.environ[FORMAT_VARIABLE], os.environ[LEVEL_VARIABLE] = fmt, name
    if level_asked:  # else Prefect keeps its own (PREFECT_LOGGING_LEVEL)
        os.environ["PREFECT_LOGGING_LEVEL"] = name
    if fmt == "json":  # Prefect reads these when it sets its logging up (on import): its console lines as ours
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER"] = "json"
        os.environ["PREFECT_LOGGING_FORMATTERS_JSON_CLASS"] = f"{__name__}.{JsonLines.__name__}"
    root = logging.getLogger()
    for old in [handler for handler in root.handlers if isinstance(handler, _Handler)]:
        root.removeHandler(old)
    handler = _Handler()
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(name)
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    if fmt == "json":
        _prefect_console_in_json()
    return fmt, name


def _prefect_console_in_json() -> None:
    """Prefect's console lines as ours where Prefect set its logging up before this setup ran."""
    if "prefect.logging.handlers" not in sys.modules:
        return  # not imported yet: it will read the variables above
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    for logger in [each for each in loggers if isinstance(each, logging.Logger)]:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setFormatter(JsonLines())
