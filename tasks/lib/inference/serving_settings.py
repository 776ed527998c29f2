"""What `textclf serve` and `textclf predict` run with: a workspace's params.yaml, or none (a serving host).

Each setting comes from, lowest first: the defaults in code (equal to params.yaml's), the
workspace's params.yaml (`serve:`, the prediction-log keys of `monitor:`, `paths.registry`) where
there is one, the environment (`TEXTCLF_SERVE_<KEY>`, `TEXTCLF_MONITOR_<KEY>`, `TEXTCLF_REGISTRY`),
and the command's options (docs/guides/serving.md#settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tasks.lib.config import PARAMS_FILE, Params, PredictionLogConfig, ServeConfig, load_params
from tasks.lib.errors import ConfigError
from tasks.lib.io import is_url

REGISTRY_VARIABLE = "TEXTCLF_REGISTRY"


@dataclass(frozen=True)
class ServingSettings:
    registry: Path | str  # a folder, or an object-store URL
    serve: ServeConfig
    prediction_log: PredictionLogConfig


def registry_location(root: Path, registry: str | None, params: Params | None) -> Path | str:
    """The registry a command works on: `registry` (--registry, TEXTCLF_REGISTRY) when given, a URL or a folder
    under `root`; else params.yaml's paths.registry; else `root`/registry (a host with no params.yaml)."""
    if registry:
        return registry if is_url(registry) else (root / registry).resolve()
    return params.location("registry") if params is not None else (root / "registry").resolve()


def serving_settings(root: Path, registry: str | None = None, **options: object) -> ServingSettings:
    """The settings of a server or a prediction in `root` (with or without params.yaml).

    Args:
        root: the workspace (or any folder, on a serving host); a relative registry is under it.
        registry: over paths.registry (`--registry`, or TEXTCLF_REGISTRY: the command line reads it).
        options: serve: keys a command's options set (None: not given).

    Raises:
        ConfigError: params.yaml is invalid, or a setting from any source is out of range.
    """
    params = load_params(root) if (root / PARAMS_FILE).exists() else None
    location = registry_location(root, registry, params)
    try:
        return ServingSettings(
            location,
            ServeConfig.from_environment(params.serve if params else None, **options),
            PredictionLogConfig.from_environment(params.monitor if params else None),
        )
    except ValidationError as exc:
        source = f"{root / PARAMS_FILE} serve:/monitor:, " if params else ""
        raise ConfigError(f"serving settings ({source}TEXTCLF_SERVE_*, TEXTCLF_MONITOR_*, options): {exc}") from None
