"""The Spark session of the Spark engines (validate.engine: spark, `textclf score --engine spark`).

One per process (Spark reuses it), on `validate.spark.master` (local mode by default, or a
cluster) with `validate.spark.conf` over the defaults below. pyspark and Java come with `make spark`.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tasks.lib.errors import PipelineError

# Arrow between the JVM and the Python workers; the session's own UI and its port are of no use here.
DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
}


class SparkUnavailable(PipelineError, RuntimeError):
    """A Spark engine was asked for, but pyspark or Java is missing, or Spark does not start."""


def spark_session(master: str, conf: dict[str, str], app: str, asked_by: str) -> Any:
    """A Spark session on `master` with `conf` over DEFAULTS, named `app`.

    `asked_by`: what chose Spark (`validate.engine is spark`, `--engine spark`), for the errors.

    Raises:
        SparkUnavailable: pyspark is not installed, or Spark does not start (no Java, no master).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkUnavailable(
            f"{asked_by}, but pyspark is not installed: `make spark` installs it and Java 17"
        ) from exc
    # The Python workers run this interpreter (its environment has the project), unless told otherwise;
    # local mode reads the environment variable, not the spark.pyspark.python setting.
    os.environ.setdefault("PYSPARK_PYTHON", conf.get("spark.pyspark.python", sys.executable))
    builder = SparkSession.builder.master(master).appName(app)
    for name, value in {**DEFAULTS, **conf}.items():
        builder = builder.config(name, value)
    try:
        return builder.getOrCreate()
    except Exception as exc:  # py4j raises a bare Exception when no JVM starts
        raise SparkUnavailable(
            f"{asked_by}, but Spark did not start ({exc}): it needs Java 17 or later (`make spark` installs "
            f"Debian's openjdk-17-jre-headless) and, for a cluster, a reachable master ({master})"
        ) from exc
