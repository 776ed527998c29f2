"""The floor plan: stages are leaves, the library imports neither stages nor apps, no import cycles,
and dvc.yaml's deps name every file each stage runs."""

from __future__ import annotations

import graphlib
import textwrap
from pathlib import Path

import pytest
import yaml

from tasks.apps.code_deps import (
    check_stages,
    import_closure,
    import_graph,
    project_modules,
    report,
    stage_module,
)
from tests.conftest import REPO

STAGES = "tasks.stages."


def test_every_stage_module_is_a_dvc_stage_run_as_its_own_module():
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {name: stage_module(name, stage["cmd"]) for name, stage in spec.items()}
    assert commands == {name: f"{STAGES}{name}" for name in spec}
    on_disk = {m for m in project_modules(REPO) if m.startswith(STAGES)}
    assert on_disk == set(commands.values())


def test_no_stage_imports_another_stage():
    graph = import_graph(REPO, project_modules(REPO))
    crossings = {
        module: sorted(n for n in imported if n.startswith(STAGES) and n != module)
        for module, imported in graph.items()
        if module.startswith(STAGES)
    }
    assert {m: found for m, found in crossings.items() if found} == {}


def test_the_library_imports_only_the_library():
    graph = import_graph(REPO, project_modules(REPO))
    outside = {
        module: sorted(n for n in imported if not n.startswith("tasks.lib"))
        for module, imported in graph.items()
        if module.startswith("tasks.lib")
    }
    assert {m: found for m, found in outside.items() if found} == {}


def test_the_import_graph_has_no_cycles():
    graph = import_graph(REPO, project_modules(REPO))
    # A package's own __init__ importing its children is not a cycle of modules.
    edges = {module: {n for n in imported if not module.startswith(n + ".")} for module, imported in graph.items()}
    graphlib.TopologicalSorter(edges).prepare()  # raises CycleError naming the cycle


def test_dvc_yaml_deps_name_all_the_code_each_stage_runs():
    stages = check_stages(REPO)
    assert report(stages) == ""
    assert all(stage.runs for stage in stages)
    # A lazy import inside a function counts: evaluate loads torch models through tasks.lib.models.
    by_name = {stage.name: stage for stage in stages}
    assert Path("tasks/lib/models.py") in by_name["evaluate"].runs
    assert Path("tasks/lib/models.py") not in by_name["split"].runs


def _project(root: Path, files: dict[str, str], deps: list[str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    stage = {"cmd": "python -m tasks.stages.fit", "deps": [*deps, "data/in.csv"]}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fit": stage}}))


SMALL_PROJECT = {
    "tasks/__init__.py": '"""docstring only: runs no code."""\n',
    "tasks/lib/__init__.py": "",
    "tasks/stages/__init__.py": "",
    "tasks/stages/fit.py": """
        from tasks.lib import shapes

        def run():
            from .. lib.helpers import helper  # lazy and relative: still run
            return helper(shapes.SIDES)
        """,
    "tasks/lib/shapes.py": "SIDES = 4\n",
    "tasks/lib/helpers.py": "from tasks.lib.shapes import SIDES\n\ndef helper(n):\n    return n * SIDES\n",
    "tasks/lib/unused.py": "X = 1\n",
}


def test_the_closure_follows_lazy_relative_and_from_package_imports(tmp_path):
    _project(tmp_path, SMALL_PROJECT, [])
    assert import_closure(tmp_path, "tasks.stages.fit") == {
        Path("tasks/stages/fit.py"),
        Path("tasks/lib/shapes.py"),
        Path("tasks/lib/helpers.py"),
    }


def test_the_check_names_a_missing_helper_and_code_listed_in_vain(tmp_path):
    _project(tmp_path, SMALL_PROJECT, ["tasks/stages/fit.py", "tasks/lib/shapes.py", "tasks/lib/unused.py"])
    (stage,) = check_stages(tmp_path)
    assert stage.missing == {Path("tasks/lib/helpers.py")}
    assert stage.needless == [Path("tasks/lib/unused.py")]
    assert "fit: runs, but dvc.yaml does not list: tasks/lib/helpers.py" in report([stage])


def test_a_folder_dep_covers_its_files_and_is_needless_when_the_stage_runs_only_some(tmp_path):
    _project(tmp_path, SMALL_PROJECT, ["tasks/stages/fit.py", "tasks/lib"])
    (stage,) = check_stages(tmp_path)
    assert stage.missing == set()
    assert stage.needless == [Path("tasks/lib")]  # unused.py would re-run the stage for nothing


def test_code_in_a_package_init_joins_the_closure(tmp_path):
    _project(
        tmp_path,
        {**SMALL_PROJECT, "tasks/__init__.py": "import os\nHOME = os.environ.get('HOME')\n"},
        ["tasks/stages/fit.py", "tasks/lib/shapes.py", "tasks/lib/helpers.py"],
    )
    (stage,) = check_stages(tmp_path)
    assert stage.missing == {Path("tasks/__init__.py")}


def test_a_stage_command_other_than_its_module_is_refused():
    with pytest.raises(ValueError, match=r"cmd must be `python -m tasks\.stages\.<name>`"):
        stage_module("train", "python -m tasks.cli stage train")


def test_the_cli_usage_and_the_readme_name_every_command_and_module():
    import argparse

    from tasks.apps import cli

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    usage = {line.split()[1] for line in (cli.__doc__ or "").splitlines() if line.strip().startswith("textclf ")}
    assert usage == set(commands)
    readme = (REPO / "README.md").read_text()
    command_block = readme.split("## Command line", 1)[1].split("## Layout", 1)[0]
    assert {f"textclf {name}" for name in commands} <= {
        " ".join(line.split()[:2]) for line in command_block.splitlines()
    }
    layout = readme.split("## Layout", 1)[1].split("```", 2)[1]
    listed = {line.split()[0] for line in layout.splitlines() if line.strip()}
    modules = {p.name for part in ("stages", "lib", "apps") for p in (REPO / "tasks" / part).glob("*.py")}
    packages = {f"{p.parent.name}/" for p in (REPO / "tasks" / "lib").glob("*/__init__.py")}
    assert (modules | packages) - {"__init__.py"} - listed == set()
