"""The errors a person can act on: their message is the whole story, shown without a traceback."""

from __future__ import annotations

import os


class PipelineError(Exception):
    """A failure whose message tells a person what to fix: shown without a traceback."""


class ConfigError(PipelineError, ValueError):
    """params.yaml is missing, unreadable or has a bad key or value."""


class DataError(PipelineError, ValueError):
    """The source cannot be read as a labelled text dataset.

    The message names the file, and where it applies the line, column and field.
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        message: str,
        line: int | None = None,
        field: str | None = None,
        column: int | None = None,
    ):
        where = str(file) + (f":{line}" if line is not None else "") + (f":{column}" if column is not None else "")
        what = f" field '{field}':" if field else ""
        super().__init__(f"{where}:{what} {message}")
        self.file, self.line, self.column, self.field = str(file), line, column, field
