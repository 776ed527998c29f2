"""Per-role store policies (tasks.lib.storage.access_policies) and the team guide that shows them."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tasks.lib.errors import ConfigError
from tasks.lib.storage.access_policies import grants, policies
from tests.support.repo import BIN
from tests.support.team_guide import GUIDE, guide_commands


def test_each_role_reaches_only_its_prefixes():
    by_role = grants("s3://team/ml/dvc", "s3://models/registry")
    assert [(g.bucket, g.prefix, g.access) for g in by_role["serving"]] == [("models", "registry", "read")]
    assert [(g.bucket, g.prefix, g.access) for g in by_role["landing"]] == [
        ("team", "ml/dvc/textclf/incoming", "write")
    ]
    assert {(g.bucket, g.prefix) for g in by_role["worker"]} == {("team", "ml/dvc"), ("models", "registry")}
    serving = policies("s3://team/ml/dvc", "s3://models/registry", "aws")["serving"]
    actions = {action for statement in serving["Statement"] for action in statement["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}  # nothing that writes
    listing = next(st for st in serving["Statement"] if st["Action"] == ["s3:ListBucket"])
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["registry", "registry/*"]}}


@pytest.mark.parametrize(
    ("dvc", "registry", "message"),
    [
        ("gs://team/dvc", "s3://team/registry", "the DVC remote 'gs://team/dvc': policies are written for S3"),
        ("s3://team", "s3://team/registry", "give it a prefix in the bucket"),
        ("s3://team/dvc", "/srv/registry", "paths.registry '/srv/registry'"),
    ],
)
def test_what_policies_cannot_express_is_a_clear_error(dvc, registry, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        grants(dvc, registry)


def test_the_team_guide_shows_the_policies_the_code_writes():
    """The guide's three JSON policies are `textclf policies` for its s3://bucket/dvc and s3://bucket/registry."""
    block = r'^\?\?\? example "The (\w+) role\'s policy"\n\n    ```json\n(.*?)\n    ```'
    shown = re.findall(block, GUIDE.read_text(), re.S | re.M)
    expected = policies("s3://bucket/dvc", "s3://bucket/registry", "aws")
    assert {role: json.loads(body) for role, body in shown} == expected


def test_the_guide_commands_are_read_as_a_shell_would(tmp_path):
    commands = guide_commands()
    assert ["textclf", "remote", "s3://bucket/dvc"] in commands  # a comment after it dropped
    assert ["prefect", "worker", "start", "--pool", "textclf"] in commands  # PATH=... dropped
    assert ["textclf", "policies", "--format", "seaweedfs"] in commands  # > s3.json dropped
    assert all(command[0] in ("textclf", "prefect") for command in commands)


def test_textclf_policies_prints_the_workspace_roles(repo_copy):
    subprocess.run([str(BIN / "textclf"), "remote", "s3://team/ml/dvc"], cwd=repo_copy, check=True, capture_output=True)
    (repo_copy / "params.yaml").write_text(
        (repo_copy / "params.yaml").read_text().replace("registry: registry", "registry: s3://team/ml/registry", 1)
    )
    done = subprocess.run(
        [str(BIN / "textclf"), "policies", "--format", "seaweedfs"], cwd=repo_copy, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    identities = {identity["name"]: identity for identity in json.loads(done.stdout)["identities"]}
    assert identities["serving"]["actions"] == ["Read:team/ml/registry*", "List:team/ml/registry*"]
    assert identities["landing"]["credentials"] == [
        {"accessKey": "<landing access key>", "secretKey": "<landing secret key>"}
    ]
    # Without a team remote there is nothing to write policies for.
    subprocess.run([str(BIN / "dvc"), "remote", "remove", "storage"], cwd=repo_copy, check=True, capture_output=True)
    done = subprocess.run([str(BIN / "textclf"), "policies"], cwd=repo_copy, capture_output=True, text=True)
    assert done.returncode == 1 and "no DVC default remote" in done.stderr
