"""prefect.yaml's deployments, filled in with this workspace's values."""

import json
import shutil

import pytest
import yaml

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
    assert set(specs) == {"scheduled", "on-new-data", "monitor", "score", "label-sync"}
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


def test_the_score_deployment_runs_params_yaml_score_schedules_with_their_parameters(make_params, tmp_path):
    from flows.deployments import _prefect_file_for

    nightly = {"cron": "0 2 * * *", "input": "s3://lake/tickets/", "output": "s3://lake/scored/tickets.parquet"}
    params = make_params({"retrain": {"timezone": "Europe/Paris"}, "score": {"schedules": [nightly]}})
    shutil.copy(REPO / "prefect.yaml", params.root)
    score = next(spec for spec in deployment_specs(params) if spec["name"] == "score")
    assert score["entrypoint"] == "flows/score.py:score"
    assert score["parameters"] == {"root": str(params.root), "version": "production"}
    assert score["schedules"] == [
        {
            "cron": "0 2 * * *",
            "timezone": "Europe/Paris",
            "parameters": {"input": nightly["input"], "output": nightly["output"], "version": "production"},
        }
    ]
    # `textclf deploy` hands Prefect a copy of prefect.yaml with the schedules written in.
    (tmp_path / "deploy").mkdir()
    written = yaml.safe_load(_prefect_file_for(params, None, tmp_path / "deploy").read_text())
    assert next(d for d in written["deployments"] if d["name"] == "score")["schedules"] == score["schedules"]
    with pytest.raises(ConfigError, match=r"score\.schedules\.0\.cron"):
        make_params({"score": {"schedules": [{**nightly, "cron": "nightly"}]}})


def test_the_label_sync_deployment_runs_every_sync_minutes_and_not_while_it_is_null(make_params, tmp_path):
    from flows.deployments import _prefect_file_for, runner_deployments

    shutil.copy(REPO / "prefect.yaml", tmp_path)
    shutil.copytree(REPO / "flows", tmp_path / "flows")
    off = next(spec for spec in deployment_specs(make_params()) if spec["name"] == "label-sync")
    assert off["entrypoint"] == "flows/label_sync.py:label_sync" and off["schedules"] == []
    params = make_params({"labelling": {"sync_minutes": 15}})
    sync = next(spec for spec in deployment_specs(params) if spec["name"] == "label-sync")
    assert sync["schedules"] == [{"interval": 900}]
    (tmp_path / "deploy").mkdir()
    written = yaml.safe_load(_prefect_file_for(params, None, tmp_path / "deploy").read_text())
    assert next(d for d in written["deployments"] if d["name"] == "label-sync")["schedules"] == [{"interval": 900}]
    (served,) = [d for d in runner_deployments(params) if d.name == "label-sync"]
    assert [s.schedule.interval.total_seconds() for s in served.schedules] == [900]
