"""prefect.yaml's deployments, filled in with this workspace's values."""

import json
import shutil

import pytest

from flows.deployments import deployment_specs, fill_placeholders
from tasks.lib.errors import ConfigError
from tests.support.repo import REPO


def test_every_placeholder_of_prefect_yaml_is_filled_from_params(make_params):
    params = make_params(
        {
            "retrain": {"cron": "15 4 * * *", "timezone": "Europe/Paris", "debounce_seconds": 30},
            "monitor": {"cron": "*/30 * * * *"},
        }
    )
    shutil.copy(REPO / "prefect.yaml", params.root)
    specs = {spec["name"]: spec for spec in deployment_specs(params)}
    assert set(specs) == {"scheduled", "on-new-data", "monitor"}
    assert "{{" not in json.dumps(specs)
    assert specs["scheduled"]["schedules"] == [{"cron": "15 4 * * *", "timezone": "Europe/Paris"}]
    assert specs["scheduled"]["parameters"] == {"root": str(params.root)}
    trigger = specs["on-new-data"]["triggers"][0]
    assert trigger["within"] == trigger["schedule_after"] == "PT30S"
    assert specs["monitor"]["schedules"] == [{"cron": "*/30 * * * *", "timezone": "Europe/Paris"}]
    assert specs["monitor"]["entrypoint"] == "flows/monitor.py:monitor"


def test_an_unknown_placeholder_is_named():
    assert fill_placeholders({"a": ["x {{ $KNOWN }} y", 3]}, {"KNOWN": "1"}) == {"a": ["x 1 y", 3]}
    with pytest.raises(ConfigError, match=r"unknown placeholder \{\{ \$TYPO \}\}"):
        fill_placeholders({"a": "{{ $TYPO }}"}, {"KNOWN": "1"})
