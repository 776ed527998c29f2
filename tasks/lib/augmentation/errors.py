"""The error every augmentation engine raises when it is missing or fails."""

from tasks.lib.errors import PipelineError


class EngineError(PipelineError, RuntimeError):
    """An augmentation engine is missing or failed; the message says which and how to install it."""
