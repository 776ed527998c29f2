"""The errors a person can act on: their message is the whole story, shown without a traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure whose message tells a person what to fix: shown without a traceback."""


class ConfigError(PipelineError, ValueError):
    """params.yaml is missing, unreadable or has a bad key or value."""
