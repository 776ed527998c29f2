"""Files an unlucky producer or a hostile one drops in the landing folder (docs/guides/security.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# 1,999,000 rows of one 1,999-character text, dictionary-encoded: about 420 KB, under
# retrain.max_file_bytes and max_file_rows; decoded, 4 GB (19.6 GB of memory once, before the bound).
BOMB_ROWS = 1_999_000


def parquet_bomb(path: Path) -> Path:
    """Write the Parquet bomb to `path`: a hidden name first, then renamed, so a watcher sees it whole."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    same = pa.array(np.zeros(BOMB_ROWS, np.int32))
    table = pa.table(
        {
            "text": pa.DictionaryArray.from_arrays(same, pa.array([("a fine film " * 200)[:1999]])),
            "label": pa.DictionaryArray.from_arrays(same, pa.array(["positive"])),
        }
    )
    part = path.with_name(f".{path.name}.part")
    pq.write_table(table, part, compression="zstd")
    part.rename(path)
    assert path.stat().st_size < 500_000
    return path


# Writes its first argument, and once told to go on (a line on stdin) its second, keeping the file open.
PAUSING_WRITER = """
import sys
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write(sys.argv[2])
    out.flush()
    print("paused", flush=True)
    sys.stdin.readline()
    out.write(sys.argv[3])
"""


def pausing_writer(path: Path, text: str) -> subprocess.Popen[str]:
    """A producer writing `text` to `path` in place: the first half of its lines, then nothing, the file
    still open, until told to go on (`communicate("go on\\n")`), then the rest. Returns once it paused."""
    lines = text.splitlines(keepends=True)
    half = len(lines) // 2
    writer = subprocess.Popen(
        [sys.executable, "-c", PAUSING_WRITER, str(path), "".join(lines[:half]), "".join(lines[half:])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "paused\n"
    return writer
