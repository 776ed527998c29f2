"""Files people have: headerless text files, compressed files, archives, spreadsheets, mixed folders."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import json
import lzma
import zipfile

import pandas as pd
import pytest

from tasks.lib.data.incoming import batch_files
from tasks.lib.data.landing import ingest_new
from tasks.lib.data.readers import DataError, data_format, data_stem, read_file, read_source

ROWS = [
    ("a fine film, truly; with wit", "positive"),
    ("a dull plot, and a long one", "negative"),
    ('quotes "inside" stay', "positive"),
]


def tab_lines(rows=ROWS) -> bytes:
    return "".join(f"{text}\t{label}\n" for text, label in rows).encode()


def csv_text(rows=ROWS) -> bytes:
    return pd.DataFrame(rows, columns=["text", "label"]).to_csv(index=False).encode()


def workbook(sheets: dict[str, list[list[object]]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def zstd(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def test_names_say_format_and_compression():
    assert data_format("Reviews.CSV.GZ") == (".csv", ".gz") and data_format("a.b.parquet.zst") == (".parquet", ".zst")
    assert data_format("x.zip") == (".zip", None) and data_format("notes.md") is None
    assert data_format("reviews.csv.done") is None and data_format("archive.gz") is None
    assert data_stem("train.tsv.bz2") == "train" and data_stem("my.data.csv") == "my.data"


def test_a_folder_of_headerless_text_files_is_read_with_data_columns(tmp_path, make_params):
    folder = tmp_path / "reviews"
    folder.mkdir()
    (folder / "part1.txt").write_bytes(tab_lines())
    (folder / "part2.txt").write_bytes(tab_lines([("one more, with commas, many", "negative")]))
    params = make_params({"data": {"source": str(folder), "columns": ["text", "label"]}})
    frame = read_source(params.data, params.root)
    assert frame["text"].tolist() == [text for text, _ in ROWS] + ["one more, with commas, many"]
    assert frame["row_id"].tolist() == ["part1.txt:1", "part1.txt:2", "part1.txt:3", "part2.txt:1"]
    # Without data.columns the first line is the header: here it is a review, and the error says so.
    with pytest.raises(DataError, match=r"part1\.txt:1: no text column: looked for .*set data\.text_column"):
        read_source(make_params({"data": {"source": str(folder)}}).data, params.root)


def test_an_ambiguous_text_file_names_the_delimiters_that_fit_and_data_sep(tmp_path, make_params):
    path = tmp_path / "scores.txt"
    path.write_text("text;label,x\ngood;positive,1\nbad;negative,0\n")
    with pytest.raises(DataError, match=r"scores\.txt:1: ambiguous delimiter: comma and semicolon .* data\.sep"):
        read_file(path, make_params().data)
    frame = read_file(path, make_params({"data": {"sep": ";", "label_column": "label,x"}}).data)
    assert frame["text"].tolist() == ["good", "bad"] and frame["label"].tolist() == ["positive,1", "negative,0"]
    (tmp_path / "prose.txt").write_text("just some prose\nwith no delimiter at all\n")
    with pytest.raises(DataError, match=r"prose\.txt:1: no delimiter among comma .* set data\.sep"):
        read_file(tmp_path / "prose.txt", make_params().data)


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("reviews.csv.gz", gzip.compress),
        ("reviews.tsv.bz2", bz2.compress),
        ("reviews.jsonl.xz", lzma.compress),
        ("reviews.parquet.zst", zstd),
        ("reviews.txt.gz", gzip.compress),
    ],
)
def test_compressed_files_read_like_the_plain_ones(tmp_path, make_params, name, pack):
    kind = name.split(".")[1]
    parquet = io.BytesIO()
    pd.DataFrame(ROWS, columns=["text", "label"]).to_parquet(parquet)
    plain = {
        "csv": csv_text(),
        "tsv": b"text\tlabel\n" + tab_lines(),
        "jsonl": "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in ROWS).encode(),
        "parquet": parquet.getvalue(),
        "txt": tab_lines(),
    }[kind]
    (tmp_path / name).write_bytes(pack(plain))
    columns = ["text", "label"] if kind == "txt" else None
    frame = read_file(tmp_path / name, make_params({"data": {"columns": columns}}).data)
    assert [tuple(r) for r in frame[["text", "label"]].itertuples(index=False)] == ROWS
    assert frame["source_file"].iloc[0] == str(tmp_path / name)


def test_errors_in_compressed_files_point_at_the_line_and_bombs_are_stopped(tmp_path, make_params):
    broken = csv_text() + b'"never closed,positive\n'
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(broken))
    with pytest.raises(DataError, match=r"broken\.csv\.gz:5: a quoted field that starts in this row is never closed"):
        read_file(tmp_path / "broken.csv.gz", make_params().data)
    (tmp_path / "big.csv.gz").write_bytes(gzip.compress(csv_text() + b"a film,positive\n" * 100_000))
    with pytest.raises(DataError, match=r"big\.csv\.gz: expands past data\.max_expanded_bytes \(100000 bytes\)"):
        read_file(tmp_path / "big.csv.gz", make_params({"data": {"max_expanded_bytes": 100_000}}).data)
    (tmp_path / "fake.csv.xz").write_bytes(b"not xz at all")
    with pytest.raises(DataError, match=r"fake\.csv\.xz: not a readable \.xz file"):
        read_file(tmp_path / "fake.csv.xz", make_params().data)


def test_what_parquet_and_spreadsheets_decode_to_is_bounded_and_the_refusal_names_row_and_column(tmp_path, make_params):
    import pyarrow as pa
    import pyarrow.parquet as pq

    config = make_params({"data": {"max_expanded_bytes": 1_000_000}}).data
    # 200,000 copies of one 100-character text in a few KB: each use of the dictionary entry counts.
    same = pa.array([0] * 200_000, pa.int32())
    texts = pa.DictionaryArray.from_arrays(same, pa.array(["x" * 100]))
    pq.write_table(
        pa.table({"id": [7] * 200_000, "text": texts, "label": ["positive"] * 200_000}), tmp_path / "b.parquet"
    )
    assert (tmp_path / "b.parquet").stat().st_size < 100_000
    refusal = r"b\.parquet:8621: field 'text': decodes past data\.max_expanded_bytes \(1000000 bytes\)"
    with pytest.raises(DataError, match=refusal):  # 8 + 100 + 8 bytes a row
        read_file(tmp_path / "b.parquet", config)
    # A footer that declares more than the bound is refused before anything is decoded.
    plain = pa.table({"text": [f"review {i} " * 20 for i in range(20_000)], "label": ["positive"] * 20_000})
    pq.write_table(plain, tmp_path / "plain.parquet", use_dictionary=False)
    with pytest.raises(DataError, match=r"plain\.parquet: \d+ bytes uncompressed \(Parquet metadata\), past data\."):
        read_file(tmp_path / "plain.parquet", config)
    # A workbook is a .zip of XML: its parts' sizes count, and a shared string at each use.
    rows: list[list[object]] = [["text", "label"], *([[f"y{i}" * 10_000, "positive"] for i in range(40)])]
    (tmp_path / "big.xlsx").write_bytes(workbook({"S": rows}))
    with pytest.raises(
        DataError, match=r"big\.xlsx: expands past data\.max_expanded_bytes \(1000000 bytes\): \d+ bytes"
    ):
        read_file(tmp_path / "big.xlsx", config)
    (tmp_path / "shared.xlsx").write_bytes(shared_string_workbook("y" * 30_000, uses=40))
    with pytest.raises(DataError, match=r"shared\.xlsx\[S\]:35: the cell texts pass data\.max_expanded_bytes"):
        read_file(tmp_path / "shared.xlsx", config)


def shared_string_workbook(text: str, uses: int) -> bytes:
    """A minimal .xlsx: a header and `uses` rows whose text cells all point at one shared string."""
    main = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    office = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    package = 'xmlns="http://schemas.openxmlformats.org/package/2006/relationships"'
    kind = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    cells = "".join(f'<row r="{n}"><c t="s"><v>2</v></c><c t="s"><v>3</v></c></row>' for n in range(2, uses + 2))
    parts = {
        "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        f'<Override PartName="/xl/workbook.xml" ContentType="{kind}.sheet.main+xml"/>'
        f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{kind}.worksheet+xml"/>'
        f'<Override PartName="/xl/sharedStrings.xml" ContentType="{kind}.sharedStrings+xml"/></Types>',
        "_rels/.rels": f'<Relationships {package}><Relationship Id="rId1" Type="{office}/officeDocument" '
        'Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<workbook {main} xmlns:r="{office}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/>'
        "</sheets></workbook>",
        "xl/_rels/workbook.xml.rels": f'<Relationships {package}><Relationship Id="rId1" Type="{office}/worksheet" '
        f'Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{office}/sharedStrings" '
        'Target="sharedStrings.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<worksheet {main}><sheetData><row r="1"><c t="s"><v>0</v></c><c t="s"><v>1</v>'
        f"</c></row>{cells}</sheetData></worksheet>",
        "xl/sharedStrings.xml": f"<sst {main}>"
        + "".join(f"<si><t>{t}</t></si>" for t in ("text", "label", text, "positive"))
        + "</sst>",
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as book:
        for name, xml in parts.items():
            book.writestr(name, xml)
    return out.getvalue()


def test_a_zip_of_data_files_reads_each_member_and_names_it_in_errors(tmp_path, make_params):
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("week1.csv", csv_text())
        archive.writestr("more/week2.jsonl", json.dumps({"text": "a later film", "label": "negative"}) + "\n")
        archive.writestr("README.md", "not data: passed over like in a folder")
    frame = read_file(path, make_params().data)
    assert len(frame) == 4 and frame["row_id"].tolist()[-1] == "export.zip/week1.csv:4"
    assert frame["row_id"].tolist()[0] == "export.zip/more/week2.jsonl:1"
    assert set(frame["source_file"]) == {f"{path}/more/week2.jsonl", f"{path}/week1.csv"}
    with zipfile.ZipFile(tmp_path / "bad.zip", "w") as archive:
        archive.writestr("week1.csv", csv_text() + b"a film,positive,extra\n")
    with pytest.raises(DataError, match=r"bad\.zip/week1\.csv:5: field 'label': 3 fields where the header has 2"):
        read_file(tmp_path / "bad.zip", make_params().data)
    # A zip with split names keeps them, like a folder.
    with zipfile.ZipFile(tmp_path / "splits.zip", "w") as archive:
        archive.writestr("train.csv", csv_text())
        archive.writestr("test.csv", csv_text([("another film", "negative")]))
    assert read_file(tmp_path / "splits.zip", make_params().data)["split"].tolist() == ["test"] + ["train"] * 3


def test_a_spreadsheet_reads_its_first_sheet_or_data_sheet_and_names_sheet_and_cell(tmp_path, make_params):
    path = tmp_path / "reviews.xlsx"
    path.write_bytes(
        workbook(
            {
                "Reviews": [["text", "label"], ["a fine film", "positive"], [dt.date(2026, 1, 2), "negative"]],
                "Scores": [["text", "label"], ["a loud film", 1], ["a quiet one", 0.0]],
            }
        )
    )
    frame = read_file(path, make_params().data)
    assert frame["text"].tolist() == ["a fine film", "2026-01-02"] and frame["row_id"].tolist()[-1] == "reviews.xlsx:3"
    scores = read_file(path, make_params({"data": {"sheet": "Scores"}}).data)
    assert scores["label"].tolist() == ["1", "0"]
    with pytest.raises(DataError, match=r"reviews\.xlsx: no sheet 'Missing' \(data\.sheet\); the workbook has"):
        read_file(path, make_params({"data": {"sheet": "Missing"}}).data)
    path.write_bytes(workbook({"Reviews": [["text", "label"], ["a fine film", True]]}))
    with pytest.raises(
        DataError, match=r"reviews\.xlsx\[Reviews\]: cell B2: expected text or a number, found a boolean"
    ):
        read_file(path, make_params().data)
    path.write_bytes(workbook({"Sheet": [["a fine film", "positive"], ["a bad film", "negative"]]}))
    headerless = read_file(path, make_params({"data": {"columns": ["text", "label"]}}).data)
    assert headerless["label"].tolist() == ["positive", "negative"]


def test_a_folder_mixing_formats_keeps_each_rows_file_and_line(tmp_path, make_params):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.csv").write_bytes(csv_text(ROWS[:1]))
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(json.dumps({"text": "a film", "label": "negative"}).encode()))
    (folder / "c.xlsx").write_bytes(workbook({"S": [["text", "label"], ["a sheet film", "positive"]]}))
    with zipfile.ZipFile(folder / "d.zip", "w") as archive:
        archive.writestr("e.tsv", b"text\tlabel\n" + tab_lines(ROWS[1:2]))
    params = make_params({"data": {"source": str(folder)}})
    frame = read_source(params.data, params.root)
    assert frame["row_id"].tolist() == ["a.csv:2", "b.jsonl.gz:1", "c.xlsx:2", "d.zip/e.tsv:2"]


def test_a_compressed_file_dropped_into_landing_is_accepted(make_params):
    params = make_params({"data": {"demo": {"rows": 120}}})
    landing = params.path("landing")
    landing.mkdir(parents=True)
    (landing / "week1.csv.gz").write_bytes(gzip.compress(csv_text()))
    receipt = ingest_new(params, landing / "week1.csv.gz", move=True)
    assert receipt.accepted and receipt.rows == 3
    (batch,) = batch_files(params.path("incoming"))
    assert pd.read_parquet(batch)["row_id"].tolist()[0] == "b0001/week1.csv.gz:2"
    # What it may expand to is bounded like an uncompressed file's size.
    (landing / "week2.csv.gz").write_bytes(gzip.compress(csv_text() + b"a film,positive\n" * 20_000))
    small = make_params({"data": {"demo": {"rows": 120}}, "retrain": {"max_file_bytes": 100_000}})
    refused = ingest_new(small, landing / "week2.csv.gz", move=True)
    assert not refused.accepted and "expands past data.max_expanded_bytes (100000 bytes)" in refused.reason


@pytest.mark.parametrize(
    ("column", "values"),
    [
        ("order_id", [str(100_000 + i) for i in range(30)]),
        ("price", [f"${i}.99" for i in range(30)]),
        ("created", [f"2026-01-{i + 1:02d}T10:{i:02d}:00Z" for i in range(30)]),
        ("link", [f"https://shop.example/p/{i}" for i in range(30)]),
        ("sha", [f"{i:02d}3f2a9c8e1b7d4e6f" for i in range(30)]),
    ],
)
def test_a_text_column_that_is_not_language_fails_and_names_the_columns_that_are(tmp_path, make_params, column, values):
    frame = pd.DataFrame(
        {
            column: values,
            "review": [f"a film I liked, number {i}" for i in range(30)],
            "title": [f"Title {i}" for i in range(30)],
            "label": ["positive", "negative"] * 15,
        }
    )
    frame.to_csv(tmp_path / "export.csv", index=False)
    params = make_params({"data": {"text_column": [column]}})
    with pytest.raises(
        DataError, match=rf"export\.csv: field '{column}': the text column '{column}' looks like ids"
    ) as exc:
        read_file(tmp_path / "export.csv", params.data)
    assert "columns that look like text: ['review', 'title']" in str(exc.value) and "data.text_column" in str(exc.value)
    # The right column reads, and texts in other scripts and emoji are language.
    assert len(read_file(tmp_path / "export.csv", make_params({"data": {"text_column": ["review"]}}).data)) == 30
    multilingual = ["电影很好看", "الفيلم رائع", "😀👍😍", "좋은 영화", "Отличный фильм", "10/10 👏"] * 5
    frame.assign(review=multilingual).to_csv(tmp_path / "world.csv", index=False)
    assert len(read_file(tmp_path / "world.csv", make_params({"data": {"text_column": ["review"]}}).data)) == 30
