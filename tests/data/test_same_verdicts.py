"""Validation decides as the in-memory implementation did, on SST-2 and on every corpus case.

tests/data/verdicts.json was recorded by `python -m tests.data.verdicts` before validation
read its tables in batches and judged copies by hash; this reruns the same workspaces and
compares verdicts, per-rule counts and values, flagged row ids, reasons and accepted rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.data.verdicts import RECORD, all_verdicts, differences


def test_same_verdicts_counts_and_flagged_rows_as_recorded(tmp_path: Path):
    (tmp_path / "corpus").mkdir()
    recorded = json.loads(RECORD.read_text())
    now = all_verdicts(tmp_path)
    assert len(now) == len(recorded) >= 40
    assert not differences(recorded, now), "\n".join(differences(recorded, now))
