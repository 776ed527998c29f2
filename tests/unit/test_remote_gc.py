"""`textclf gc` on a team's DVC remote (tasks/lib/storage/remote_gc.py), here a folder laid out as DVC lays
out a remote: what the team state, the protected versions and the newest runs name stays, the rest goes.
(On SeaweedFS, after real runs: tests/integration/test_team_hosts.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from dvc_objects.fs.local import LocalFileSystem

from tasks.lib.config import Keep
from tasks.lib.storage.remote_gc import RemoteCollector, hashes_of_lock, object_path
from tasks.lib.storage.team_workspace import TeamRemote, TeamSyncError

DAY = 86_400
NOW = 1_800_000_000.0


def put(path: Path, content: str | bytes, age_days: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))


class Remote:
    """A DVC remote in a folder: objects by md5, run-cache entries by stage, the team state."""

    def __init__(self, base: Path):
        self.base = base
        self.team = TeamRemote("team", str(base), LocalFileSystem(), str(base / "textclf"))

    def object(self, md5: str, content: str = "x", age_days: float = 10) -> Path:
        path = Path(object_path(str(self.base), md5))
        put(path, content, age_days)
        return path

    def entry(self, stage: str, name: str, outs: list[str], age_days: float) -> Path:
        """An entry as DVC files it: under a key of its command and inputs, one folder per input set."""
        key = f"{len(list(self.base.glob('runs/*/*'))):064x}"
        path = self.base / "runs" / key[:2] / key / name
        entry = {"cmd": f"python -m tasks.stages.{stage}", "outs": [{"path": "o", "md5": m} for m in outs]}
        put(path, yaml.safe_dump(entry), age_days)
        return path

    def state(self, outs: dict[str, list[str]]) -> None:
        stages = {name: {"cmd": "c", "outs": [{"path": "o", "md5": m} for m in md5s]} for name, md5s in outs.items()}
        put(self.base / "textclf" / "state" / "dvc.lock", yaml.safe_dump({"schema": "2.0", "stages": stages}), 1)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path / "remote")


def test_what_the_state_the_protected_versions_and_the_newest_runs_name_stays(remote: Remote):
    # The team state: train's model (a directory) and split's data.
    model_files = ["aa" + "1" * 30, "ab" + "2" * 30]
    listing = json.dumps([{"md5": md5, "relpath": f"f{i}"} for i, md5 in enumerate(model_files)])
    state_model = remote.object("a0" + "0" * 30 + ".dir", listing)
    kept = [state_model, *(remote.object(md5) for md5 in model_files), remote.object("b0" + "0" * 30)]
    remote.state({"train": ["a0" + "0" * 30 + ".dir"], "split": ["b0" + "0" * 30]})
    # Production's lineage names an older data set; a newer train run is the newest entry of its stage.
    kept.append(remote.object("c0" + "0" * 30))
    kept += [remote.entry("train", "new", ["d0" + "0" * 30], age_days=2), remote.object("d0" + "0" * 30)]
    # An old entry the team state is restored from stays; an old one naming nothing live goes, with its object.
    kept.append(remote.entry("train", "state", ["a0" + "0" * 30 + ".dir"], age_days=40))
    gone = [remote.entry("train", "old", ["e0" + "0" * 30], age_days=50), remote.object("e0" + "0" * 30)]
    # An old run whose outputs only partly equal the state's (its metrics file, say) is another run's.
    gone.append(remote.entry("train", "partly", ["b0" + "0" * 30, "e1" + "0" * 30], age_days=45))
    gone.append(remote.object("e1" + "0" * 30))
    gone.append(remote.object("f0" + "0" * 30, "an output nothing names any more"))
    kept.append(remote.object("f1" + "0" * 30, "pushed an hour ago by a run still going", age_days=1 / 24))
    records = [{"model_md5": "zz", "data": {"validated_md5": "c0" + "0" * 30, "source": "demo"}}]

    collector = RemoteCollector(remote.team, Keep(keep_last=1, max_age_days=30), records, min_age_s=DAY)
    planned = collector.collect(dry_run=True, now=NOW)
    assert all(path.exists() for path in kept + gone)  # a dry run removes nothing
    assert sorted(planned.objects_removed + planned.entries_removed) == sorted(str(p) for p in gone)
    done = collector.collect(now=NOW)
    assert [path for path in kept if not path.exists()] == [] and [path for path in gone if path.exists()] == []
    summary = done.summary()
    assert (summary["objects_removed"], summary["run_cache_entries_removed"]) == (3, 2)
    assert summary["bytes_after"] == summary["bytes_before"] - summary["bytes_removed"] > 0


def test_without_a_team_state_nothing_says_what_is_live_and_nothing_goes(remote: Remote):
    stray = remote.object("e0" + "0" * 30)
    with pytest.raises(TeamSyncError, match=r"no team state .* gc runs once a team run has published one"):
        RemoteCollector(remote.team, Keep(keep_last=1, max_age_days=1), [], min_age_s=0).collect(now=NOW)
    assert stray.exists()


def test_a_lock_s_hashes_come_from_its_stages_and_an_entry_s_from_itself():
    lock = {"stages": {"a": {"deps": [{"md5": "d"}], "outs": [{"md5": "o"}, {"path": "no-hash"}]}}}
    assert hashes_of_lock(lock) == {"d", "o"} and hashes_of_lock(lock, ("outs",)) == {"o"}
    assert hashes_of_lock({"cmd": "c", "outs": [{"md5": "x"}]}) == {"x"}
