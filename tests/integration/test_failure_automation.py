"""A crashed pipeline run notifies from the Prefect server itself (a run killed outright runs no hook of its own)."""

from __future__ import annotations

import time

import pytest

from tests.support.seaweedfs import free_port

pytestmark = pytest.mark.slow


def test_textclf_deploys_an_automation_that_reports_crashed_runs(make_params, tmp_path, webhook):
    from prefect import flow
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    from flows.deployments import ensure_failure_automation
    from flows.pipeline import PIPELINE_FLOW
    from tasks.apps.service import local_server
    from tasks.lib.errors import ConfigError

    params = make_params({"retrain": {"notify_block": "custom-webhook/ops"}})
    with local_server(free_port(), tmp_path / "prefect-home") as url, temporary_settings({PREFECT_API_URL: url}):
        with pytest.raises(ConfigError, match=r"retrain\.notify_block 'custom-webhook/ops': no such block"):
            ensure_failure_automation(params)
        CustomWebhookNotificationBlock(
            name="ops",
            url=f"{webhook.url}/hook",
            json_data={"subject": "{{subject}}", "text": "{{body}}"},
        ).save("ops", overwrite=True)
        name = ensure_failure_automation(params)
        assert name is not None and ensure_failure_automation(params) == name  # replaced, not doubled
        automation = Automation.read(name=name)
        assert automation.trigger.expect == {"prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"}

        @flow(name=PIPELINE_FLOW)
        def pipeline() -> None:
            pass

        # What a runner reports when the process of a run was killed (no hook of the run's own runs).
        with get_client(sync_client=True) as client:
            run = client.create_flow_run(pipeline)
            client.set_flow_run_state(run.id, Crashed(message="process killed by signal 9"), force=True)
        deadline = time.monotonic() + 90
        while not webhook.received:
            assert time.monotonic() < deadline, "the server sent no notification"
            time.sleep(0.5)
    assert "Crashed" in webhook.received[0]["subject"] and "killed by signal 9" in webhook.received[0]["text"]
