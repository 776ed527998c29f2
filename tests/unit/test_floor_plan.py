"""The floor plan: stages are leaves, the library imports neither stages nor apps, no import cycles,
and dvc.yaml's deps name every file each stage runs."""

from __future__ import annotations

import graphlib
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from tasks.apps.code_deps import (
    check_stages,
    fix_stages,
    import_closure,
    import_graph,
    project_modules,
    report,
    stage_module,
)
from tests.support.repo import REPO

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


def _crossings(graph: dict[str, set[str]], importer: str, allowed) -> dict[str, list[str]]:
    """Modules under `importer` that import a project module `allowed` refuses."""
    found = {
        module: sorted(n for n in imported if not allowed(n))
        for module, imported in graph.items()
        if module == importer or module.startswith(importer + ".")
    }
    return {module: names for module, names in found.items() if names}


def test_the_library_imports_only_the_library():
    graph = import_graph(REPO, project_modules(REPO))
    assert _crossings(graph, "tasks.lib", lambda n: n.startswith("tasks.lib") or n == "tasks") == {}


def test_dependencies_point_one_way_apps_to_flows_to_library():
    """Flows import the library (and other flows), never an app or a stage; apps and benchmarks import
    no stage; nothing but `tests` imports the tests."""
    graph = import_graph(REPO, project_modules(REPO))
    assert _crossings(graph, "flows", lambda n: n.startswith(("flows", "tasks.lib")) or n == "tasks") == {}
    assert _crossings(graph, "tasks.apps", lambda n: not n.startswith(STAGES)) == {}
    benchmarks = {path.stem: imported_modules_of_file(path) for path in sorted((REPO / "benchmarks").glob("*.py"))}
    assert {name: sorted(n for n in found if n.startswith(STAGES)) for name, found in benchmarks.items()} == {
        name: [] for name in benchmarks
    }
    shipped = [path for top in ("tasks", "flows", "benchmarks") for path in sorted((REPO / top).rglob("*.py"))]
    into_tests = {str(path.relative_to(REPO)): imported_modules_of_file(path) for path in shipped}
    assert {name: sorted(n for n in found if n.split(".")[0] == "tests") for name, found in into_tests.items()} == {
        name: [] for name in into_tests
    }


def imported_modules_of_file(path: Path) -> set[str]:
    """Every module a script outside the packages imports (absolute imports only, as scripts use)."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_library_is_grouped_by_concern_around_a_small_core():
    """Beside its subpackages, tasks/lib holds only the core every stage needs."""
    core = {p.stem for p in (REPO / "tasks" / "lib").glob("*.py")} - {"__init__"}
    assert core == {"artifacts", "columns", "config", "errors", "io", "logs", "metric_names", "recipes", "stage_runner"}


def test_stages_are_thin():
    """A stage reads its inputs, calls the library and writes its outputs: its policy lives in the library."""
    lengths = {p.stem: len(p.read_text().splitlines()) for p in (REPO / "tasks" / "stages").glob("*.py")}
    assert {name: n for name, n in lengths.items() if n > 200} == {}


def test_the_import_graph_has_no_cycles():
    graph = import_graph(REPO, project_modules(REPO))
    # A package's own __init__ importing its children is not a cycle of modules.
    edges = {module: {n for n in imported if not module.startswith(n + ".")} for module, imported in graph.items()}
    graphlib.TopologicalSorter(edges).prepare()  # raises CycleError naming the cycle


def test_dvc_yaml_deps_name_all_the_code_each_stage_runs():
    stages = check_stages(REPO)
    assert report(stages) == ""
    assert all(stage.runs for stage in stages)
    # A lazy import inside a function counts: evaluate loads torch models through tasks.lib.training.models.
    by_name = {stage.name: stage for stage in stages}
    assert Path("tasks/lib/training/models.py") in by_name["evaluate"].runs
    assert Path("tasks/lib/training/models.py") not in by_name["split"].runs


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


def test_editing_the_entity_scorer_makes_stale_only_the_stages_that_score(tmp_path):
    """Real DVC on dvc.yaml's own code deps (each stage's command replaced by `true`, its data left out):
    after a run, an edit to the entity scorer makes stale exactly the stages whose code imports it."""
    import shutil

    from tests.support.repo import BIN, run

    for package in ("tasks", "flows"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    code = {
        name: [dep for dep in stage["deps"] if dep.startswith(("tasks/", "flows/"))] for name, stage in spec.items()
    }
    stages = {name: {"cmd": "true", "deps": deps} for name, deps in code.items()}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    run([str(BIN / "dvc"), "init", "--no-scm", "-q"], tmp_path)
    run([str(BIN / "dvc"), "repro", "-q"], tmp_path)
    scorer = tmp_path / "tasks" / "lib" / "evaluation" / "entity_metrics.py"
    scorer.write_text(scorer.read_text() + "\n# an edit\n")
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], tmp_path).stdout)
    scoring = {
        stage.name for stage in check_stages(REPO) if Path("tasks/lib/evaluation/entity_metrics.py") in stage.runs
    }
    assert set(status) == scoring
    assert {"evaluate", "gate"} <= scoring
    assert not scoring & {"ingest", "validate", "split", "augment"}


def test_fixing_the_deps_lists_what_runs_and_keeps_the_data_deps(tmp_path):
    _project(tmp_path, SMALL_PROJECT, ["tasks/stages/fit.py", "tasks/lib/unused.py"])
    assert fix_stages(tmp_path) == ["fit"]
    (stage,) = check_stages(tmp_path)
    assert stage.complete
    deps = yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]["fit"]["deps"]
    assert deps == ["tasks/lib/helpers.py", "tasks/lib/shapes.py", "tasks/stages/fit.py", "data/in.csv"]
    assert fix_stages(tmp_path) == []


HAND_WRITTEN = """\
# Two stages, as a person writes them.
stages:
    other:  # runs nothing of the library
      cmd: python -m tasks.stages.other
      deps:
        # the data first
        - data/raw.csv
      outs:
        - data/other.csv
    fit:  # the fit stage
      cmd: python -m tasks.stages.fit
      deps:
        - "tasks/stages/fit.py"
        - tasks/lib/shapes.py  # the sides
        # a comment of its own
        - data/in.csv
        - tasks/lib/unused.py
      params:
        - fit
"""


def test_fixing_keeps_stage_comments_dep_comments_and_other_keys(tmp_path):
    _project(tmp_path, {**SMALL_PROJECT, "tasks/stages/other.py": "X = 1\n"}, [])
    (tmp_path / "dvc.yaml").write_text(HAND_WRITTEN)
    assert fix_stages(tmp_path) == ["other", "fit"]
    assert all(stage.complete for stage in check_stages(tmp_path))
    text = (tmp_path / "dvc.yaml").read_text()
    assert "    other:  # runs nothing of the library\n" in text and "    fit:  # the fit stage\n" in text
    assert "        - tasks/stages/other.py\n        # the data first\n        - data/raw.csv\n" in text
    assert (
        "        - tasks/lib/helpers.py\n"
        "        - tasks/lib/shapes.py  # the sides\n"
        '        - "tasks/stages/fit.py"\n'
        "        # a comment of its own\n"
        "        - data/in.csv\n"
        "      params:\n"
    ) in text
    assert "unused" not in text
    spec = yaml.safe_load(text)["stages"]
    assert spec["other"]["outs"] == ["data/other.csv"] and spec["fit"]["params"] == ["fit"]
    assert fix_stages(tmp_path) == []
