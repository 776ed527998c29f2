"""The columns of the datasets between stages (raw, validated, splits, augmented)."""

TEXT, LABEL, SPLIT, ROW_ID = "text", "label", "split", "row_id"
# Where a row was read: a person fixing it needs the file and line.
SOURCE_FILE, SOURCE_LINE = "source_file", "source_line"
SPLITS = ("train", "val", "test")
# Columns whose values seldom repeat (Parquet writers skip dictionary encoding for them).
DISTINCT_COLUMNS = (TEXT, ROW_ID)
# The augmented table: which method made a row ("original" for the split's own) and from which row.
ORIGIN, SOURCE_ID = "origin", "source_id"
# The raw table's columns and their Arrow types (ingest writes it batch by batch).
RAW_COLUMNS = {
    TEXT: "string",
    LABEL: "string",
    SPLIT: "string",
    ROW_ID: "string",
    SOURCE_FILE: "string",
    SOURCE_LINE: "int64",
}
