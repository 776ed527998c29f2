"""Waiting for what a server or a background thread does, without sleeping longer than it takes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], seconds: float = 10) -> bool:
    """Polls `condition` (the service reads the pointer every serve.reload_check_seconds)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
