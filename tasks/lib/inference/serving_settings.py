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

from tasks.lib.config import PARAMS_FILE, PredictionLogConfig, ServeConfig, load_params
from tasks.lib.errors import ConfigError
from tasks.lib.io import is_url

REGISTRY_VARIABLE = "TEXTCLF_REGISTRY"


@dataclass(frozen=True)
class ServingSettings:
    registry: Path | str  # a folder, or an object-store URL
    serve: ServeConfig
    prediction_log: PredictionLogConfig


def serving_settings(root: Path, registry: str | None = None, **options: object) -> ServingSettings:
    """The settings of a server or a prediction in `root` (with or without params.yaml).

    Args:
        root: the workspace (or any folder, on a serving host); a relative registry is under it.
        registry: over paths.registry (`--registry`, or TEXTCLF_REGISTRY: the command line reads it).
        options: serve: keys a command's options set (None: not given).

    Raises:
        ConfigError: params.yaml is invalid, or a setting from any source is out of range.
    """
    params = load_params(root).with_registry(registry) if (root / PARAMS_FILE).exists() else None
    if params is not None:
        location = params.location("registry")
    else:
        location = registry if registry and is_url(registry) else (root / (registry or "registry")).resolve()
    try:
        return ServingSettings(
            location,
            ServeConfig.from_environment(params.serve if params else None, **options),
            PredictionLogConfig.from_environment(params.monitor if params else None),
        )
    except ValidationError as exc:
        source = f"{root / PARAMS_FILE} serve:/monitor:, " if params else ""
        raise ConfigError(f"serving settings ({source}TEXTCLF_SERVE_*, TEXTCLF_MONITOR_*, options): {exc}") from None
