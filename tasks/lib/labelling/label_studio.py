"""A Label Studio server through its REST API: projects, tasks with pre-annotations, annotations.

Written on httpx (already installed with Prefect) rather than `label-studio-sdk`: the SDK 2.x
brings opencv, black, faker and a code generator into a worker's install for the six calls
used here (docs/guides/labelling.md#why-not-the-sdk).

Where the server is and who calls it: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (the SDK's
names), else the Prefect Secret blocks named by `labelling.url_block` and
`labelling.token_block`. The token is a personal access token (a JWT refresh token, exchanged
for short-lived access tokens) or a legacy token where the organization still allows them. It
never appears in a message or a log line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tasks.lib.config import LabellingConfig
from tasks.lib.errors import ConfigError, PipelineError

URL_VARIABLE = "LABEL_STUDIO_URL"
TOKEN_VARIABLE = "LABEL_STUDIO_API_KEY"
PAGE_SIZE = 100
# Access tokens from a refresh token live 5 minutes; one is renewed a little before.
ACCESS_SECONDS = 240


class LabelStudioError(PipelineError):
    """Label Studio refused or failed a call; the message names the call and what the server said."""


@dataclass(frozen=True)
class Connection:
    """Where the server is and the token to call it with (never printed: see __repr__)."""

    url: str
    token: str

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, token=<hidden>)"


def _secret(block: str) -> str:
    """The value of Prefect Secret block `block`."""
    from prefect.blocks.system import Secret

    try:
        secret: Any = Secret.load(block)  # the sync variant (Prefect's stubs type both)
        value = secret.get()
    except ValueError as exc:
        raise ConfigError(f"Prefect Secret block '{block}': {exc}") from None
    return str(value)


def connection(config: LabellingConfig) -> Connection:
    """The server's URL and token: from the environment, else from the Secret blocks `config` names.

    Raises:
        ConfigError: neither gives one of them; says where each is looked for.
    """
    url = os.environ.get(URL_VARIABLE) or (config.url_block and _secret(config.url_block))
    token = os.environ.get(TOKEN_VARIABLE) or (config.token_block and _secret(config.token_block))
    missing = [
        f"{what} ({variable} in the environment, or the Prefect Secret block named by labelling.{key})"
        for what, variable, key, value in (
            ("URL", URL_VARIABLE, "url_block", url),
            ("API token", TOKEN_VARIABLE, "token_block", token),
        )
        if not value
    ]
    if missing:
        raise ConfigError("Label Studio: no " + " and no ".join(missing) + " (docs/guides/labelling.md)")
    return Connection(str(url).rstrip("/"), str(token))


def _is_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class LabelStudio:
    """The calls this project makes, each failing with a LabelStudioError that names it."""

    def __init__(self, where: Connection, timeout: float = 30.0):
        self.url = where.url
        self._token = where.token
        self._access: tuple[str, float] | None = None
        self._http = httpx.Client(base_url=where.url, timeout=timeout)

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def _authorization(self) -> str:
        if not _is_jwt(self._token):
            return f"Token {self._token}"
        if self._access is None or time.monotonic() > self._access[1]:
            answer = self._call("POST", "/api/token/refresh/", {"refresh": self._token}, authorized=False)
            self._access = (str(answer["access"]), time.monotonic() + ACCESS_SECONDS)
        return f"Bearer {self._access[0]}"

    def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None, authorized: bool = True
    ) -> Any:
        headers = {"Authorization": self._authorization()} if authorized else {}
        what = f"Label Studio {method} {self.url}{path}"
        try:
            response = self._http.request(method, path, json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"{what}: {type(exc).__name__}: {exc} (is the server up at {self.url}?)") from None
        if response.status_code >= 400:
            detail = response.text[:500] if "json" in response.headers.get("content-type", "") else ""
            hint = (
                " (check the API token: a personal access token or a legacy one)" if response.status_code == 401 else ""
            )
            raise LabelStudioError(f"{what}: {response.status_code} {response.reason_phrase}{hint} {detail}".rstrip())
        return response.json() if response.content else None

    def projects(self) -> list[dict[str, Any]]:
        """Every project this token sees."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            answer = self._call("GET", "/api/projects/", params={"page": page, "page_size": PAGE_SIZE})
            results = answer["results"] if isinstance(answer, dict) else answer
            found.extend(results)
            if not isinstance(answer, dict) or not answer.get("next"):
                return found
            page += 1

    def project_titled(self, title: str) -> dict[str, Any] | None:
        """The project with this title (the first made, when several have it), or None."""
        matches = sorted((p for p in self.projects() if p.get("title") == title), key=lambda p: int(p["id"]))
        return matches[0] if matches else None

    def create_project(self, title: str, label_config: str, description: str) -> dict[str, Any]:
        project: dict[str, Any] = self._call(
            "POST",
            "/api/projects/",
            {"title": title, "label_config": label_config, "description": description},
        )
        return project

    def tasks(self, project: int) -> Iterator[dict[str, Any]]:
        """The project's tasks with their data, predictions and annotations, a page at a time."""
        page = 1
        while True:
            try:
                answer = self._call(
                    "GET",
                    "/api/tasks/",
                    params={"project": project, "fields": "all", "page": page, "page_size": PAGE_SIZE},
                )
            except LabelStudioError as exc:
                if page > 1 and " 404 " in str(exc):  # past the last page
                    return
                raise
            yield from answer["tasks"]
            if page * PAGE_SIZE >= int(answer.get("total", 0)) or not answer["tasks"]:
                return
            page += 1

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> int:
        """Import `tasks` (data and predictions) into `project`; returns how many it made."""
        if not tasks:
            return 0
        answer = self._call("POST", f"/api/projects/{project}/import", tasks)
        return int(answer["task_count"])

    def annotate(self, task: int, result: list[dict[str, Any]], cancelled: bool = False, **extra: Any) -> int:
        """An annotation of `task` (as the token's user), or a skip with `cancelled`; returns its id."""
        answer = self._call(
            "POST", f"/api/tasks/{task}/annotations/", {"result": result, "was_cancelled": cancelled, **extra}
        )
        return int(answer["id"])

    def set_label_config(self, project: int, label_config: str) -> None:
        self._call("PATCH", f"/api/projects/{project}/", {"label_config": label_config})
