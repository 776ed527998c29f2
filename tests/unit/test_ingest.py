import json

import pandas as pd
import pytest

from tasks.lib.data import readers
from tasks.lib.data.readers import DataError, read_source
from tests.support.repo import SST2


def test_demo_is_seeded_balanced_and_noisy(make_params):
    params = make_params({"data": {"demo": {"rows": 600, "label_noise": 0.1}}})
    first, second = read_source(params.data, params.root), read_source(params.data, params.root)
    pd.testing.assert_frame_equal(first, second)
    assert len(first) == 600 and first["text"].is_unique
    assert set(first["label"]) == {"negative", "positive"}
    assert 0.4 < (first["label"] == "positive").mean() < 0.6
    # Noise: some reviews built as positive carry the negative label.
    positive_words = first["text"].str.contains("I loved it|Highly recommended")
    assert (first[positive_words]["label"] == "negative").any()


def test_demo_changes_with_seed(make_params):
    a = make_params({"data": {"demo": {"seed": 1}}})
    b = make_params({"data": {"demo": {"seed": 2}}})
    assert not read_source(a.data, a.root)["text"].equals(read_source(b.data, b.root)["text"])


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl", "parquet"])
def test_each_format_with_configured_columns(tmp_path, make_params, suffix):
    frame = pd.DataFrame({"review": ['good, "very" good', "bad"], "stars": ["pos", "neg"], "extra": ["x", "y"]})
    path = tmp_path / f"reviews.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "tsv":
        frame.to_csv(path, sep="\t", index=False, quoting=3)
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict(orient="records")))
    else:
        frame.to_parquet(path)
    params = make_params(
        {"data": {"source": str(path), "text_column": "review", "label_column": "stars", "labels": ["neg", "pos"]}}
    )
    raw = read_source(params.data, params.root)
    assert list(raw["text"]) == ['good, "very" good', "bad"]
    assert list(raw["label"]) == ["pos", "neg"]
    assert raw["split"].isna().all()
    assert raw["source_line"].tolist() == ([2, 3] if suffix in ("csv", "tsv") else [1, 2])


def test_sst2_folder_keeps_its_splits_and_quirks(make_params):
    params = make_params({"data": {"source": str(SST2), "labels": [0, 1]}})
    raw = read_source(params.data, params.root)
    assert raw.groupby("split").size().to_dict() == {"train": 67349, "val": 872, "test": 1821}
    assert set(raw["label"]) == {"0", "1"}
    assert not raw["text"].str.contains("\r").any()  # CRLF endings are not part of the text
    assert raw["text"].duplicated().sum() > 300  # SST-2 train's real duplicates are still there


def test_relative_source_resolves_against_repo_root(tmp_path, make_params):
    (tmp_path / "d.csv").write_text("text,label\nfine,pos\n")
    params = make_params({"data": {"source": "d.csv", "labels": ["neg", "pos"]}})
    assert len(read_source(params.data, params.root)) == 1


def test_utf8_bom_and_quoted_newlines_are_read_with_true_line_numbers(tmp_path, make_params):
    # Spreadsheet exports: a UTF-8 byte-order mark, CRLF, and a quoted field spanning two lines.
    content = '\ufefftext,label\r\n"two\r\nlines",pos\r\nnext row,neg\r\n'.encode("utf-8")
    (tmp_path / "export.csv").write_bytes(content)
    params = make_params({"data": {"source": "export.csv", "labels": ["neg", "pos"]}})
    raw = read_source(params.data, params.root)
    assert list(raw["text"]) == ["two\r\nlines", "next row"]
    assert list(raw["source_line"]) == [2, 4]


def test_numbers_are_labels_as_a_person_writes_them(tmp_path, make_params):
    pd.DataFrame({"text": ["a", "b", "c"], "label": [1.0, 0.0, None]}).to_parquet(tmp_path / "n.parquet")
    params = make_params({"data": {"source": "n.parquet", "labels": [0, 1]}})
    assert list(read_source(params.data, params.root)["label"]) == ["1", "0", ""]


def test_missing_source_is_named(make_params):
    params = make_params({"data": {"source": "nowhere.csv"}})
    with pytest.raises(DataError, match="no such file or folder"):
        read_source(params.data, params.root)


def test_a_relative_source_outside_the_workspace_that_is_not_there_names_the_workers_clone(make_params):
    """A worker's fresh clone has nothing beside it (issue 45, point 10): `../shared/...` gets an error that
    says why, not only that the path does not exist."""
    params = make_params({"data": {"source": "../shared/data/sst2"}})
    with pytest.raises(DataError, match=r"outside this workspace .* a Prefect worker runs each flow in a fresh clone"):
        read_source(params.data, params.root)


def test_hub_source_offline_fails_clearly(make_params, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = make_params({"data": {"source": "hf:stanfordnlp/sst2"}})
    with pytest.raises(DataError, match=r"hf:stanfordnlp/sst2: .*network"):
        read_source(params.data, params.root)


@pytest.mark.parametrize("piece_bytes", [3, 7, 1 << 23])
def test_files_are_decoded_in_pieces_with_the_rows_and_lines_of_the_whole(
    tmp_path, make_params, monkeypatch, piece_bytes
):
    # Pieces of a few bytes put boundaries inside CRLF pairs, quoted newlines and multi-byte characters.
    monkeypatch.setattr(readers, "PIECE_BYTES", piece_bytes)
    csv_file = '\ufefftext,label\r\n"two\r\nlines",pos\r\nnaïve café ☕,neg\r\n\r\nlast,pos'.encode()
    (tmp_path / "a.csv").write_bytes(csv_file)
    jsonl = '{"text": "é one", "label": "pos"}\n\n{"text": "two", "label": "neg"}\n'.encode()
    (tmp_path / "b.jsonl").write_bytes(jsonl)
    params = make_params({"data": {"source": "a.csv", "labels": ["neg", "pos"]}})
    raw = read_source(params.data, params.root)
    assert list(raw["text"]) == ["two\r\nlines", "naïve café ☕", "last"]
    assert list(raw["source_line"]) == [2, 4, 6]
    params = make_params({"data": {"source": "b.jsonl", "labels": ["neg", "pos"]}})
    assert list(read_source(params.data, params.root)["source_line"]) == [1, 3]
    (tmp_path / "bad.tsv").write_bytes(b"text\tlabel\nfine\tpos\nok\tneg\nbro\xffken\tpos\n")
    params = make_params({"data": {"source": "bad.tsv", "labels": ["neg", "pos"]}})
    with pytest.raises(DataError, match=r"bad\.tsv:4:4: not UTF-8: byte 0xFF"):
        read_source(params.data, params.root)
    (tmp_path / "blank.csv").write_bytes(b"\xef\xbb\xbf \n\r\n  \n")
    params = make_params({"data": {"source": "blank.csv"}})
    with pytest.raises(DataError, match="empty file"):
        read_source(params.data, params.root)
