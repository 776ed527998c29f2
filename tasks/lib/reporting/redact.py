"""Secrets out of text that leaves the process: notification records, their log lines.

A webhook URL is its own password (Slack, Teams and Discord hooks carry the
token in the path; others in the query or as user:password@). Network URLs are
cut to scheme and host; `token=...`, `api_key: ...`, `Bearer ...` lose their
values. Local `file://` links (Data Docs) stay as they are.
"""

from __future__ import annotations

import re

_URL = re.compile(r"\b(?!file:)([a-z][a-z0-9+.-]*://)(?:[^\s/@'\"<>]*@)?([^\s/?#'\"<>]*)([^\s'\"<>]*)", re.IGNORECASE)
# A name that says "secret" (GITHUB_TOKEN, client_secret, "api_key", Authorization), an optional
# closing quote, `=` or `:`, then the value (with a scheme word such as Bearer before it).
_ASSIGNED = re.compile(
    r"(?i)(?<![a-z0-9])((?:[a-z0-9]*[_-])*(?:token|key|secret|password|passwd|signature|sig|authorization|auth))"
    r"(['\"]?\s*[:=]\s*)(['\"]?)(?:(?:bearer|basic|token)\s+)?[^\s'\",;&}]+"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[a-z0-9._~+/=-]{8,}")
HIDDEN = "[redacted]"


def redact(text: str) -> str:
    """`text` with URL paths, queries and credentials, assigned secrets and bearer tokens replaced."""
    text = _URL.sub(lambda m: f"{m.group(1)}{m.group(2)}" + (f"/{HIDDEN}" if m.group(3) else ""), text)
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{HIDDEN}", text)
    return _BEARER.sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
