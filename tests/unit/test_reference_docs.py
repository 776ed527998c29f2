"""The docs site's generated reference pages match the code, and its floor plan names every module.

docs/reference/{params,cli,http-api}.md are written by `python -m tasks.apps.reference_docs`;
a committed page that the code would now write differently fails here (and in `make lint`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.apps import cli, reference_docs
from tests.support.repo import REPO

FLOOR_PLAN = REPO / "docs" / "concepts" / "floor-plan.md"
LISTED = re.compile(r"^((?:tasks|flows)/[\w/]*?(?:\.py|/))(?:\s|$)")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below this one (registry list, review export, ...), depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _subparsers(sub)


def _leaf_keys(mapping: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in mapping.items():
        yield f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaf_keys(value, f"{prefix}{key}.")


def test_the_committed_reference_pages_are_what_the_code_generates():
    # In a fresh process, as `make lint` checks: the pages are what a reader's checkout generates, not
    # what this worker's earlier tests may have left in its imported modules (once seen in CI).
    check = subprocess.run(
        [sys.executable, "-m", "tasks.apps.reference_docs", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr


def test_the_params_page_does_not_depend_on_what_the_process_built_before():
    # typing caches Annotated[...] by equality, and Gt(gt=0.0) == Gt(gt=0): a page built from
    # `Annotated[float, Gt(0)]` said "> 0.0" in a process that had built the float form first (the
    # worker-dependent failure CI once saw). The page takes the fields' own constraints instead.
    from annotated_types import Ge, Gt

    page = reference_docs.params_page(REPO)
    for constraint in (Gt(gt=0.0), Ge(ge=0.0), Gt(gt=0), Ge(ge=0)):
        typing.Annotated[float, constraint]
        assert reference_docs.params_page(REPO) == page


def test_a_changed_param_comment_changes_the_params_page(tmp_path: Path):
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    shipped = reference_docs.params_page(REPO)
    above = "  # ONNX Runtime intra-op threads (null: OMP_NUM_THREADS where set, else one per core).\n  threads: null"
    assert text.count(above) == 1, "the test edits serve.threads' comment in params.yaml"
    edited = tmp_path / "params.yaml"
    edited.write_text(
        text.replace(above, "  # How many threads the model may use: a changed comment.\n  threads: 3").replace(
            "text_present: fail        # empty", "text_present: fail        # nothing visible, said otherwise; empty"
        ),
        encoding="utf-8",
    )
    page = reference_docs.params_page(REPO, edited)
    assert page != shipped
    row = next(line for line in page.splitlines() if line.startswith("| `serve.threads` |"))
    assert "How many threads the model may use: a changed comment." in row and "`3`" in row
    assert "OMP\\_NUM\\_THREADS" not in row
    beside = next(line for line in page.splitlines() if line.startswith("| `validate.rules.text_present` |"))
    assert "nothing visible, said otherwise; empty" in beside


def test_check_exits_1_naming_the_page_that_would_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert reference_docs.main(["--root", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "docs" / "reference").iterdir()) == ["cli.md", "http-api.md", "params.md"]
    assert reference_docs.main(["--root", str(tmp_path), "--check"]) == 0
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace("  port: 8000", "  port: 8000  # a new comment"))
    capsys.readouterr()
    assert reference_docs.main(["--root", str(tmp_path), "--check"]) == 1
    error = capsys.readouterr().err
    assert "docs/reference/params.md differs" in error
    assert "+| `serve.port` |" in error and "a new comment" in error  # the diff shows the change
    assert "cli.md" not in error and "http-api.md" not in error


def test_the_params_page_has_every_key_with_its_default():
    page = reference_docs.params_page(REPO)
    rows = set(re.findall(r"^\| `([^`]+)` \|", page, re.MULTILINE))
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert {f"## {section}" for section in params} <= set(page.splitlines())
    # A key is a row of its own, or inside the value of its nearest row (a flow mapping: `{min: 0.75, ...}`).
    parts = [key.split(".") for key in _leaf_keys(params)]
    unlisted = {
        ".".join(p) for p in parts if len(p) > 1 and not any(".".join(p[:n]) in rows for n in range(2, len(p) + 1))
    }
    assert unlisted == set()
    assert "| `train.learning_rate` | number, > 0.0 and < 1.0 | `5.0e-5` |" in page
    assert '| `validate.engine` | `"pandas"` \\| `"spark"` | `pandas` |' in page


def test_the_cli_page_has_every_command_and_option():
    page = reference_docs.cli_page(REPO)
    parser = cli.build_parser()
    for sub in _subparsers(parser):
        assert f"## {sub.prog}\n" in page
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    section = page.split(f"## {sub.prog}\n", 1)[1].split("\n## ", 1)[0]
                    assert re.search(rf"^\| `[^`]*{re.escape(option)}\b", section, re.MULTILINE), (sub.prog, option)


def test_the_http_api_page_has_every_route_and_schema():
    document = reference_docs.openapi_document(REPO)
    page = reference_docs.http_api_page(REPO)
    assert {"/predict", "/health", "/feedback", "/metrics"} <= set(document["paths"])
    for path, methods in document["paths"].items():
        for method in methods:
            assert f"## {method.upper()} {path}\n" in page
    for name in document["components"]["schemas"]:
        assert f"### {name}\n" in page
    assert "| `409` |" in page and "| `429` |" in page


def test_the_cli_usage_names_every_command_and_the_floor_plan_every_module():
    """The CLI's docstring usage names every subcommand; docs/concepts/floor-plan.md lists every module
    and package under tasks/stages, tasks/lib (its subpackages too), tasks/apps and flows, and only
    those that exist."""
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    usage = {line.split()[1] for line in (cli.__doc__ or "").splitlines() if line.strip().startswith("textclf ")}
    assert usage == set(commands)

    blocks = re.findall(r"^```text\n(.*?)^```", FLOOR_PLAN.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    listed = {m.group(1) for block in blocks for line in block.splitlines() if (m := LISTED.match(line))}
    modules = {
        p.relative_to(REPO).as_posix()
        for folder in ("tasks/stages", "tasks/apps", "flows")
        for p in (REPO / folder).glob("*.py")
        if p.name != "__init__.py"
    }
    modules |= {
        p.relative_to(REPO).as_posix() for p in (REPO / "tasks" / "lib").rglob("*.py") if p.name != "__init__.py"
    }
    packages = {f"{p.parent.relative_to(REPO).as_posix()}/" for p in (REPO / "tasks" / "lib").rglob("*/__init__.py")}
    assert (modules | packages) - listed == set(), "modules missing from docs/concepts/floor-plan.md"
    gone = {path for path in listed if not (REPO / path).exists()}
    assert gone == set(), "docs/concepts/floor-plan.md lists paths that do not exist"
