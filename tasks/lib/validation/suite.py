"""Great Expectations: the suites built from params, run on pandas, rendered as Data Docs.

An ephemeral context (nothing written but the Data Docs site): one suite per
table (rows, classes, dataset), each expectation carrying its rule name and
policy in its description so the Data Docs read like the summary. The site
renders offline: what its pages load from CDNs is copied into it
(tasks.lib.reporting.offline_html).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.lib.columns import ROW_ID, TEXT
from tasks.lib.config import DataConfig, Task, ValidateConfig
from tasks.lib.data.text import visible_pattern
from tasks.lib.errors import PipelineError
from tasks.lib.reporting.offline_html import make_site_offline
from tasks.lib.reporting.web_assets import installed
from tasks.lib.validation.features import (
    BROKEN_IOB,
    CONFLICT,
    CONTROL,
    EXACT_COPY_OF,
    LABEL_ISSUE,
    LEAK,
    MAPPED_LABEL,
    MISALIGNED,
    NEAR_COPY_OF,
    NOT_LANGUAGE,
    TOKENS,
    UNKNOWN_TAG,
)

SITE = "reports"
DRIFT_RULES = ("label_drift", "length_drift")
_GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
# Great Expectations' logo, which its pages load from its web server; the site holds a copy. The
# dark-mode stylesheet asks for a light-on-dark variant that the site lacks: the same logo stands in.
GX_IMAGES = {
    f"{_GX_IMAGES}logo-long.png": "static/images/logo-long.png",
    f"{_GX_IMAGES}full_logo_dark.png": "static/images/logo-long.png",
}


class GXError(PipelineError, RuntimeError):
    """An expectation raised instead of judging (a broken engine, a missing column)."""


@dataclass(frozen=True)
class Rule:
    """One rule: its params name, what it demands (for people), and its GX expectation."""

    name: str
    demands: str
    expectation: Any


def import_gx() -> Any:
    # No usage statistics from an offline pipeline; GX reads this at import.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import great_expectations as gx

    return gx


def _rule(config: ValidateConfig, name: str, demands: str, expectation: Any, **arguments: Any) -> Rule:
    """A rule whose expectation says, in the Data Docs, its name, policy and demand."""
    policy = getattr(config.rules, name)
    return Rule(name, demands, expectation(description=f"{name} ({policy}): {demands}", **arguments))


def row_rules(
    gx: Any, data: DataConfig, config: ValidateConfig, label_noise: bool = False, task: Task = "sequence_classification"
) -> list[Rule]:
    """The per-row rules, in the order params.yaml lists them; `label_noise`: with that one (whole datasets);
    token classification judges tags (tags_aligned, tags_in_set, tags_iob) where the other judges the label.

    Their regular expressions run on RE2 (pandas with Arrow strings) and java.util.regex (Spark),
    and are written in the syntax both read.
    """
    e, c = gx.expectations, config
    noise = [
        _rule(
            c,
            "label_noise",
            f"label agrees with a {c.label_noise.folds}-fold cross-validated text model (confident learning)",
            e.ExpectColumnValuesToBeNull,
            column=LABEL_ISSUE,
        )
    ]
    return [*_single_row_rules(gx, data, c, task), *(noise if label_noise else [])]


def _single_row_rules(gx: Any, data: DataConfig, config: ValidateConfig, task: Task) -> list[Rule]:
    """The rules each row is judged by on its own or with its copies."""
    e, c = gx.expectations, config
    types = ", ".join(data.labels)
    label_rules = (
        [
            _rule(
                c,
                "label_in_set",
                f"label in {list(data.labels)} (after data.label_map)",
                e.ExpectColumnValuesToBeInSet,
                column=MAPPED_LABEL,
                value_set=list(data.labels),
            )
        ]
        if task == "sequence_classification"
        else [
            _rule(c, "tags_aligned", "one tag per word", e.ExpectColumnValuesToBeNull, column=MISALIGNED),
            _rule(c, "tags_in_set", f"tags O or B-/I- of {types}", e.ExpectColumnValuesToBeNull, column=UNKNOWN_TAG),
            _rule(c, "tags_iob", "each I-X continues an X (IOB2)", e.ExpectColumnValuesToBeNull, column=BROKEN_IOB),
        ]
    )
    return [
        _rule(
            c,
            "text_present",
            "text has a visible character",
            e.ExpectColumnValuesToMatchRegex,
            column=TEXT,
            regex=visible_pattern("braced"),
        ),
        _rule(
            c,
            "text_charset",
            "no control characters or U+FFFD in the text",
            e.ExpectColumnValuesToNotMatchRegex,
            column=TEXT,
            regex=CONTROL,
        ),
        _rule(
            c,
            "text_language",
            "words, not only numbers, ids, codes, URLs or e-mail addresses",
            e.ExpectColumnValuesToBeNull,
            column=NOT_LANGUAGE,
        ),
        _rule(
            c,
            "text_length",
            f"{c.min_chars} to {c.max_chars} characters",
            e.ExpectColumnValueLengthsToBeBetween,
            column=TEXT,
            min_value=c.min_chars,
            max_value=c.max_chars,
        ),
        _rule(
            c,
            "text_tokens",
            f"{c.min_tokens} to {c.max_tokens} tokens",
            e.ExpectColumnValuesToBeBetween,
            column=TOKENS,
            min_value=c.min_tokens,
            max_value=c.max_tokens,
        ),
        *label_rules,
        _rule(c, "conflicting_labels", "one label per normalised text", e.ExpectColumnValuesToBeNull, column=CONFLICT),
        _rule(
            c,
            "split_leakage",
            "each normalised text in one source split only",
            e.ExpectColumnValuesToBeNull,
            column=LEAK,
        ),
        _rule(c, "duplicate_exact", "no repeated text", e.ExpectColumnValuesToBeNull, column=EXACT_COPY_OF),
        _rule(
            c,
            "duplicate_normalised",
            "no text repeated up to case, spacing or Unicode form",
            e.ExpectColumnValuesToBeNull,
            column=NEAR_COPY_OF,
        ),
    ]


def class_rules(gx: Any, config: ValidateConfig, task: Task = "sequence_classification") -> list[Rule]:
    """The class-share rule: of the rows, or (token classification) of the entities."""
    counted = "rows" if task == "sequence_classification" else "entities"
    return [
        _rule(
            config,
            "min_class_share",
            f"each label at least {config.min_class_share:.1%} of the {counted}",
            gx.expectations.ExpectColumnValuesToBeBetween,
            column="share",
            min_value=config.min_class_share,
        )
    ]


def dataset_rules(gx: Any, config: ValidateConfig, measured: Collection[str] = DRIFT_RULES) -> list[Rule]:
    """Whole-table rules on a one-row table; of the drift rules, those `measured` (against an accepted dataset).

    Min/max expectations (rather than per-value ones) make the Data Docs show the observed value.
    """
    e, c = gx.expectations, config
    at_least, at_most = e.ExpectColumnMinToBeBetween, e.ExpectColumnMaxToBeBetween
    rules = [
        _rule(c, "min_rows", f"at least {c.min_rows} rows", at_least, column="rows", min_value=c.min_rows),
        _rule(
            c,
            "max_imbalance_ratio",
            f"largest class at most {c.max_imbalance_ratio:g}x the smallest",
            at_most,
            column="imbalance_ratio",
            max_value=c.max_imbalance_ratio,
        ),
    ]
    labels, length = c.drift.labels, c.drift.length
    drift = [
        _rule(
            c,
            "label_drift",
            f"label distribution {labels.statistic} at most {labels.threshold:g}",
            at_most,
            column="label_drift",
            max_value=labels.threshold,
        ),
        _rule(
            c,
            "length_drift",
            f"text length {length.statistic} at most {length.threshold:g}",
            at_most,
            column="length_drift",
            max_value=length.threshold,
        ),
    ]
    return rules + [rule for rule in drift if rule.name in measured]


class Validator:
    """An ephemeral GX context that validates pandas tables and can render Data Docs."""

    def __init__(self, gx: Any, docs: Path | None):
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every in-memory batch under this many bytes (MD5 over pandas' hash of
        # each cell) only to label it in the results, which nothing here reads: a fifth of the row
        # suite's time on large tables. GX already skips it from 1 GB up; this skips it always.
        pandas_execution_engine.HASH_THRESHOLD = 0
        # Checked first: missing web files fail the run now, not after the suites ran.
        self.web_assets = installed() if docs is not None else None
        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.sources: dict[str, Any] = {"pandas": self.context.data_sources.add_pandas("pipeline")}
        self.docs = docs
        if docs is not None:
            self.context.add_data_docs_site(
                site_name=SITE,
                site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs)},
                },
            )

    def suite(
        self, table: str, rules: list[Rule], key: str | None = None, engine: str = "pandas"
    ) -> Callable[[Any], dict[str, Any]]:
        """The suite `table` of `rules`, as a function that runs it on a DataFrame (as often as there are
        batches; each run is a page of the Data Docs) and returns {rule name: GX result}.

        Args:
            key: the column that identifies a failing row in results (row id, label).
            engine: `pandas` (pandas DataFrames) or `spark` (Spark DataFrames, GX's Spark execution engine).
        """
        gx = self.gx
        if engine not in self.sources:
            self.sources[engine] = self.context.data_sources.add_spark(engine)
        batch = self.sources[engine].add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = self.context.suites.add(gx.ExpectationSuite(name=table))
        for rule in rules:
            suite.add_expectation(rule.expectation)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=table, data=batch, suite=suite)
        )
        result_format: dict[str, Any] = {"result_format": "COMPLETE"}
        if key is not None:
            result_format["unexpected_index_column_names"] = [key]

        def run(frame: Any) -> dict[str, Any]:
            results = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format).results
            # By the id the suite gave each expectation: GX does not return results in the order they were added.
            by_id = {result.expectation_config.id: result for result in results}
            for result in results:
                # GX reports an expectation that could not run as a failed one; it must stop the run instead.
                raised = _raised(result.exception_info)
                if raised:
                    raise GXError(
                        f"Great Expectations could not run {result.expectation_config.type} on {table}: {raised[0]}"
                    )
            return {rule.name: by_id[rule.expectation.id] for rule in rules}

        return run

    def build_docs(self) -> None:
        """Render the Data Docs site (index.html and a page per suite run) into `docs`, self-contained."""
        if self.docs is not None and self.web_assets is not None:
            self.context.build_data_docs(site_names=[SITE])
            repair_favicon_links(self.docs)
            make_site_offline(self.docs, self.web_assets, GX_IMAGES)


_FAVICON = re.compile(r"""(<link rel="shortcut icon" href=")(?:\.\./|\./)*(static/images/favicon\.ico")""")


def repair_favicon_links(site: Path) -> None:
    """Point each page's favicon link at the site's favicon.

    GX 1.24 links it one folder too high from validation result pages (favicon.j2 climbs 3
    folders, the pages lie 4 deep), which a browser reports as a missing file.
    """
    for page in site.rglob("*.html"):
        up = "../" * (len(page.relative_to(site).parts) - 1) or "./"
        text = page.read_text(encoding="utf-8")
        fixed = _FAVICON.sub(rf"\g<1>{up}\g<2>", text)
        if fixed != text:
            page.write_text(fixed, encoding="utf-8")


def _raised(info: Any) -> list[str]:
    """The messages of the exceptions in a GX result's exception_info (flat, or one entry per metric)."""
    if not isinstance(info, dict):
        return []
    if "raised_exception" in info:
        return [str(info.get("exception_message"))] if info["raised_exception"] else []
    return [message for value in info.values() for message in _raised(value)]


def flagged_keys(result: Any, key: str = ROW_ID) -> list[Any]:
    """The key values of the rows an expectation found unexpected."""
    return [item[key] for item in result.result.get("unexpected_index_list") or []]
