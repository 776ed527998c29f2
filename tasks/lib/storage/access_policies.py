"""What each host of a team may do in the object store: one grant per role, written as AWS IAM policies
or as SeaweedFS's `-s3.config` identities (docs/guides/team.md, "Credentials per role").

- **worker**: reads and writes the DVC remote (data, models, run-cache, workspace state, reports)
  and the registry (versions, pointer, history, lease);
- **serving**: reads the registry, nothing else: a serving host cannot change production;
- **landing**: reads and writes the accepted batches only (`<remote>/textclf/incoming/`): it
  cannot touch models, the state or the registry.

Object stores grant by key prefix, so a role's reach is a list of (bucket, prefix) with read or
write; listing is granted on the same prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tasks.lib.errors import ConfigError
from tasks.lib.storage.team_workspace import TEAM_FOLDER

Role = Literal["worker", "serving", "landing"]
ROLES: tuple[Role, ...] = ("worker", "serving", "landing")
Access = Literal["read", "write"]

# Writers also abort their failed multipart uploads (DVC and s3fs upload large files in parts).
_AWS_ACTIONS: dict[Access, list[str]] = {
    "read": ["s3:GetObject"],
    "write": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
}
_SEAWEEDFS_ACTIONS: dict[Access, list[str]] = {"read": ["Read", "List"], "write": ["Read", "List", "Write"]}


@dataclass(frozen=True)
class Grant:
    """Access to every key under `prefix` of `bucket`."""

    bucket: str
    prefix: str
    access: Access


def _split_s3(url: str, what: str) -> tuple[str, str]:
    if not url.startswith("s3://"):
        raise ConfigError(f"{what} {url!r}: policies are written for S3 (s3://bucket/prefix) stores only")
    bucket, _, prefix = url.removeprefix("s3://").strip("/").partition("/")
    if not bucket or not prefix:
        raise ConfigError(f"{what} {url!r}: give it a prefix in the bucket (s3://bucket/dvc), so roles can differ")
    return bucket, prefix


def grants(dvc_remote: str, registry: str) -> dict[Role, list[Grant]]:
    """Each role's grants for a team whose DVC remote and registry are these s3:// URLs.

    Raises:
        ConfigError: a URL is not s3://bucket/prefix.
    """
    dvc_bucket, dvc_prefix = _split_s3(dvc_remote, "the DVC remote")
    registry_bucket, registry_prefix = _split_s3(registry, "paths.registry")
    incoming = f"{dvc_prefix}/{TEAM_FOLDER}/incoming"
    return {
        "worker": [Grant(dvc_bucket, dvc_prefix, "write"), Grant(registry_bucket, registry_prefix, "write")],
        "serving": [Grant(registry_bucket, registry_prefix, "read")],
        "landing": [Grant(dvc_bucket, incoming, "write")],
    }


def aws_policy(role_grants: list[Grant]) -> dict[str, Any]:
    """An IAM policy document: the objects under each prefix, and listing limited to those prefixes."""
    statements: list[dict[str, Any]] = []
    for grant in role_grants:
        statements.append(
            {
                "Effect": "Allow",
                "Action": _AWS_ACTIONS[grant.access],
                # The prefix's own key too: a client asks for the "folder" (HeadObject) before listing it.
                "Resource": [
                    f"arn:aws:s3:::{grant.bucket}/{grant.prefix}",
                    f"arn:aws:s3:::{grant.bucket}/{grant.prefix}/*",
                ],
            }
        )
        statements.append(
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{grant.bucket}"],
                "Condition": {"StringLike": {"s3:prefix": [grant.prefix, f"{grant.prefix}/*"]}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def seaweedfs_actions(role_grants: list[Grant]) -> list[str]:
    """SeaweedFS identity actions (`Read:bucket/prefix/*`...) for these grants."""
    # `prefix*`, not `prefix` and `prefix/*`: SeaweedFS (4.48) refused a HeadObject of the prefix's own key
    # (the "folder" a client asks for before listing it) under the exact form. It also admits keys that
    # merely start with the prefix's name (`incoming2/`), which nothing here writes.
    return [
        f"{action}:{grant.bucket}/{grant.prefix}*"
        for grant in role_grants
        for action in _SEAWEEDFS_ACTIONS[grant.access]
    ]


def seaweedfs_config(dvc_remote: str, registry: str) -> dict[str, Any]:
    """A SeaweedFS `-s3.config` file's content: one identity per role; put each role's own keys in."""
    by_role = grants(dvc_remote, registry)
    return {
        "identities": [
            {
                "name": role,
                "credentials": [{"accessKey": f"<{role} access key>", "secretKey": f"<{role} secret key>"}],
                "actions": seaweedfs_actions(by_role[role]),
            }
            for role in ROLES
        ]
    }


def policies(dvc_remote: str, registry: str, style: Literal["aws", "seaweedfs"]) -> dict[str, Any]:
    """What `textclf policies` prints: an IAM policy per role, or a SeaweedFS `-s3.config` to fill in."""
    if style == "seaweedfs":
        return seaweedfs_config(dvc_remote, registry)
    by_role = grants(dvc_remote, registry)
    return {role: aws_policy(by_role[role]) for role in ROLES}
