"""The one logging setup (tasks/lib/logs.py): text or JSON lines, a level, what a stage relays to its flow."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from flows.pipeline import relayed
from tasks.lib.logs import LogSettingError, chosen, configure_logging


@pytest.fixture(autouse=True)
def restored(monkeypatch: pytest.MonkeyPatch):
    """Each test's settings and handler undone: the environment and the root logger are the process's."""
    for name in ("TEXTCLF_LOG_FORMAT", "TEXTCLF_LOG_LEVEL", "PREFECT_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("PREFECT_LOGGING_HANDLERS_CONSOLE_FORMATTER", "PREFECT_LOGGING_FORMATTERS_JSON_CLASS"):
        monkeypatch.delenv(name, raising=False)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_json_lines_carry_the_level_the_logger_the_time_and_a_record_s_fields(capsys):
    configure_logging("json", "info")
    logging.getLogger("textclf.access").info("POST /predict 200", extra={"request_id": "ab12", "status": 200})
    logging.getLogger("textclf.serve").debug("below the level")
    (line,) = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert record | {"time": "-"} == {
        "level": "INFO",
        "logger": "textclf.access",
        "message": "POST /predict 200",
        "request_id": "ab12",
        "status": 200,
        "time": "-",
    }
    assert record["time"].endswith("+00:00")


def test_what_a_command_chose_is_passed_on_to_what_it_starts(capsys):
    configure_logging("json", "debug")
    child = "import logging, tasks.lib.logs as l; l.configure_logging(); logging.getLogger('x').debug('from the child')"
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, check=True)
    assert json.loads(done.stderr) | {"time": "-"} == {
        "level": "DEBUG",
        "logger": "x",
        "message": "from the child",
        "time": "-",
    }


def test_a_setting_that_does_not_exist_is_named_with_its_choices(monkeypatch):
    monkeypatch.setenv("TEXTCLF_LOG_FORMAT", "yaml")
    with pytest.raises(LogSettingError, match=r"'yaml' .*TEXTCLF_LOG_FORMAT.*text or json"):
        chosen()
    with pytest.raises(LogSettingError, match=r"'LOUD' .*TEXTCLF_LOG_LEVEL"):
        chosen("text", "loud")
    done = subprocess.run(
        [sys.executable, "-m", "tasks", "registry", "list"],
        capture_output=True,
        text=True,
        env={"TEXTCLF_LOG_FORMAT": "yaml"},
    )
    assert done.returncode == 1 and "error: log format 'yaml'" in done.stderr


def test_a_stage_in_json_says_its_failure_as_a_json_record(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "tasks.stages.split"],
        cwd=tmp_path,  # no params.yaml here
        capture_output=True,
        text=True,
        env={"TEXTCLF_LOG_FORMAT": "json", "PATH": "/usr/bin:/bin"},
    )
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert done.returncode == 1 and [r["level"] for r in records] == ["ERROR"]
    assert "params.yaml" in records[0]["message"]


def test_a_flow_relays_a_stage_s_lines_at_their_level():
    assert relayed("WARNING validate: 3 rows quarantined") == (logging.WARNING, "validate: 3 rows quarantined")
    assert relayed("INFO train: {}") == (logging.INFO, "train: {}")
    # What is not a relay line (DVC's own, a progress bar, the stage's `error:` block) stays as it is.
    assert relayed("error: no params.yaml") == (logging.INFO, "error: no params.yaml")
    assert relayed("Running stage 'split':") == (logging.INFO, "Running stage 'split':")


def test_a_request_s_url_is_not_logged_even_at_debug(capsys):
    configure_logging("text", "debug")
    logging.getLogger("httpx").info('HTTP Request: POST https://hooks.example/T0/s3cr3t "HTTP/1.1 403 Forbidden"')
    logging.getLogger("textclf").debug("ours")
    assert capsys.readouterr().err.count("\n") == 1
