"""Which project files each DVC stage runs, read from the code, against what dvc.yaml declares.

A stage's command is `python -m tasks.stages.<name>`; the files it runs are
that module and every project module it imports, directly or not, at the top
or inside a function (a lazy import runs too). `textclf deps` prints what
dvc.yaml misses or names in vain; tests/unit/test_floor_plan.py fails on it,
so an edited helper always makes the stages that use it stale.

A package's `__init__.py` that holds nothing but a docstring runs no code and
is left out; one with code in it is part of every closure through it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGES = ("tasks", "flows")  # the project's own top-level packages
STAGE_PACKAGE = "tasks.stages"


def module_file(root: Path, module: str) -> Path | None:
    """The file of a project module (`a.b` -> a/b.py or a/b/__init__.py), None if there is none."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_inert(path: Path) -> bool:
    """A file whose body is at most a docstring."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _type_checking_only(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`): imports for the type checker, never run."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes_that_run(tree: ast.AST) -> Iterable[ast.AST]:
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        children = list(ast.iter_child_nodes(node))
        if _type_checking_only(node):
            children = list(node.orelse)  # type: ignore[attr-defined]
        todo.extend(children)


def imported_modules(root: Path, module: str) -> set[str]:
    """The project modules `module` imports anywhere in its file that runs (absolute and relative imports)."""
    path = module_file(root, module)
    if path is None:
        return set()
    found: set[str] = set()
    for node in _nodes_that_run(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = _package(module, path).split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            # `from package import name`: name may be a submodule.
            found.update(
                f"{base}.{alias.name}" for alias in node.names if module_file(root, f"{base}.{alias.name}") is not None
            )
    return {name for name in found if name.split(".")[0] in PACKAGES and module_file(root, name) is not None}


def _with_parents(module: str) -> list[str]:
    """Importing `a.b.c` runs a/__init__, a/b/__init__ and a/b/c."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_closure(root: Path, module: str) -> set[Path]:
    """Every project file that running `python -m <module>` executes (inert package files left out)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for each in _with_parents(name):
            if each not in seen:
                seen.add(each)
                todo.extend(imported_modules(root, each))
    files = {module_file(root, name) for name in seen}
    return {path.relative_to(root) for path in files if path is not None and not _is_inert(path)}


def import_graph(root: Path, modules: Iterable[str]) -> dict[str, set[str]]:
    """module -> the project modules it imports, for `modules` and everything they reach."""
    graph: dict[str, set[str]] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name not in graph:
            graph[name] = imported_modules(root, name)
            todo.extend(graph[name])
    return graph


def project_modules(root: Path) -> list[str]:
    """Every module of the project's packages."""
    return sorted(
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for package in PACKAGES
        for path in (root / package).rglob("*.py")
    )


@dataclass
class StageDeps:
    """One stage: the code it runs, and what dvc.yaml's deps say about it."""

    name: str
    module: str
    runs: set[Path]
    declared: list[Path]
    missing: set[Path] = field(default_factory=set)  # run, not declared: edits would go unseen
    needless: list[Path] = field(default_factory=list)  # declared code the stage does not run

    @property
    def complete(self) -> bool:
        return not self.missing and not self.needless


def _covers(dep: Path, file: Path) -> bool:
    return file == dep or dep in file.parents


def _is_code(root: Path, dep: Path) -> bool:
    return dep.parts[0] in PACKAGES and (dep.suffix == ".py" or (root / dep).is_dir())


def stage_module(name: str, command: str) -> str:
    """The module a stage command runs (`python -m tasks.stages.<name>`); anything else is an error."""
    words = command.split()
    if words[:2] != ["python", "-m"] or len(words) != 3 or not words[2].startswith(f"{STAGE_PACKAGE}."):
        raise ValueError(f"dvc.yaml stage '{name}': cmd must be `python -m {STAGE_PACKAGE}.<name>`, got {command!r}")
    return words[2]


def check_stages(root: Path) -> list[StageDeps]:
    """Every dvc.yaml stage's import closure against its declared code deps."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    found = []
    for name, stage in spec["stages"].items():
        module = stage_module(name, stage["cmd"])
        runs = import_closure(root, module)
        declared = [Path(dep) for dep in stage.get("deps", []) if _is_code(root, Path(dep))]
        result = StageDeps(name, module, runs, declared)
        result.missing = {file for file in runs if not any(_covers(dep, file) for dep in declared)}
        for dep in declared:
            files = (
                [dep]
                if dep.suffix == ".py"
                else [p.relative_to(root) for p in (root / dep).rglob("*.py") if not _is_inert(p)]
            )
            if not files or any(file not in runs for file in files):
                result.needless.append(dep)
        found.append(result)
    return found


def report(stages: list[StageDeps]) -> str:
    """What to change in dvc.yaml, stage by stage (empty when nothing)."""
    lines = []
    for stage in stages:
        if stage.missing:
            lines.append(
                f"{stage.name}: runs, but dvc.yaml does not list: " + ", ".join(str(p) for p in sorted(stage.missing))
            )
        if stage.needless:
            lines.append(
                f"{stage.name}: dvc.yaml lists code the stage does not run (all of it): "
                + ", ".join(str(p) for p in stage.needless)
            )
    return "\n".join(lines)


def proposed_deps(root: Path, stage: StageDeps) -> list[str]:
    """The code deps dvc.yaml should list for a stage: a library subpackage as a folder where the
    stage runs all of it, every other file it runs by name (sorted)."""
    folders = []
    for init in sorted((root / "tasks" / "lib").glob("*/__init__.py")):
        files = {p.relative_to(root) for p in init.parent.rglob("*.py") if not _is_inert(p)}
        if files and files <= stage.runs:
            folders.append(init.parent.relative_to(root))
    singles = [file for file in stage.runs if not any(_covers(folder, file) for folder in folders)]
    return sorted(str(p) for p in [*folders, *singles])


def _item_lines(lines: list[str], first: int, items: int) -> list[int]:
    """The line of each of `items` single-line list items from line `first` on, skipping comment lines."""
    found: list[int] = []
    number = first
    while len(found) < items:
        if lines[number].lstrip().startswith("- "):
            found.append(number)
        number += 1
    return found


def fix_stages(root: Path) -> list[str]:
    """Rewrite the code deps of every stage in dvc.yaml to `proposed_deps`, keeping its data deps, its
    comments (a dep's own comment stays with it; a comment on a line of its own stays on that line) and
    the file's layout. The code deps take the place of the first one listed (or open the list).

    Returns:
        The names of the stages changed.
    Raises:
        ValueError: a stage has no `deps:` key (add one; a stage runs at least its own module).
    """
    from ruamel.yaml import YAML

    path = root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    spec = YAML().load(text)  # the round-trip loader: it knows each key's and item's line
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []  # (first line, lines replaced, new lines), top to bottom
    changed: list[str] = []
    for found in check_stages(root):
        wanted = proposed_deps(root, found)
        if [str(dep) for dep in found.declared] == wanted:
            continue
        stage = spec["stages"][found.name]
        if "deps" not in stage:
            raise ValueError(f"dvc.yaml stage '{found.name}': no `deps:` list to write its code deps into")
        deps = stage["deps"]
        key_line, key_column = stage.lc.key("deps")
        numbers = _item_lines(lines, key_line + 1, len(deps))
        code = [number for number, dep in zip(numbers, deps, strict=True) if _is_code(root, Path(str(dep)))]
        at = code[0] if code else key_line + 1
        column = deps.lc.item(0)[1] - 2 if len(deps) else key_column + 2
        kept = {str(dep): lines[n] for n, dep in zip(numbers, deps, strict=True) if n in code}
        new = [kept.get(dep, f"{' ' * column}- {dep}\n") for dep in wanted]
        # Remove every code dep's line, then insert the wanted list where the first one was.
        edits += [(number, 1, new if number == at else []) for number in code]
        if not code:
            edits.append((at, 0, new))
        changed.append(found.name)
    for first, count, new in sorted(edits, key=lambda edit: edit[0], reverse=True):
        lines[first : first + count] = new
    path.write_text("".join(lines), encoding="utf-8")
    return changed
