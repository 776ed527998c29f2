"""The worker image's recipe (Dockerfile, .dockerignore) against the repository and the Makefile.

No Docker needed: these are the ways the recipe breaks without anyone building it (a file it
copies was renamed or is ignored, the Makefile's packages, lock or environment changed).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from tests.support.repo import REPO

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) in order: continuation lines joined, comments and blank lines dropped."""
    instructions, current = [], ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops these inside a continuation too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, f"{path.name} ends in a continuation line"
    return instructions


def copy_sources(arguments: str) -> list[str] | None:
    """The context paths of a COPY/ADD (None when it copies from another stage or image)."""
    leading = re.match(r"(?:\s*--\S+)*", arguments)
    flags = leading.group(0).split() if leading else []
    rest = arguments[leading.end() if leading else 0 :].strip()
    if any(flag.startswith("--from=") for flag in flags):
        return None
    paths: list[str] = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    return paths[:-1]


def assignments(arguments: str) -> dict[str, str]:
    """`NAME=value ...` of an ARG or ENV line, quotes removed (ARG NAME without a default: '')."""
    found = {}
    for word in shlex.split(arguments):
        name, _, value = word.partition("=")
        found[name] = value
    return found


def makefile_variables() -> dict[str, str]:
    """The Makefile's simple `NAME := value`, `NAME ?= value` and `export NAME ?= value` lines."""
    found = {}
    for line in (REPO / "Makefile").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*[:?]?=\s*(.*?)\s*", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go's filepath.Match, plus `**` for any depth)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out, i = out + "(?:.*/)?", i + 1
            else:
                out += ".*"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def ignore_rules(text: str) -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, excludes) in file order; `!pattern` re-includes."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        excludes = not line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rules.append((pattern_regex(pattern), excludes))
    return rules


def excluded(path: str, rules: list[tuple[re.Pattern[str], bool]]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last rule that matches it or
    one of its parent folders decides (moby's patternmatcher MatchesOrParentMatches)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for regex, excludes in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = excludes
    return result


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


@pytest.fixture(scope="module")
def rules() -> list[tuple[re.Pattern[str], bool]]:
    return ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))


def test_the_ignore_matcher_follows_dockers_rules():
    rules = ignore_rules("data\n**/__pycache__\n*.egg-info\n/logs/\n!data/keep\n")
    assert excluded("data", rules) and excluded("data/raw/a.csv", rules)
    assert not excluded("data/keep", rules) and not excluded("database.py", rules)
    assert excluded("tasks/lib/__pycache__/x.pyc", rules) and excluded("__pycache__/x.pyc", rules)
    assert excluded("textclf.egg-info/PKG-INFO", rules) and not excluded("tasks/x.egg-info", rules)
    assert excluded("logs/a.jsonl", rules) and not excluded("tasks/logs.py", rules)


def test_every_copied_path_exists_and_is_in_the_build_context(instructions, rules):
    copies = [copy_sources(args) for keyword, args in instructions if keyword in ("COPY", "ADD")]
    sources = [source for paths in copies if paths is not None for source in paths]
    assert sources, "the Dockerfile copies nothing"
    for source in sources:
        if source in (".", "./"):
            continue
        matches = sorted(REPO.glob(source))
        assert matches, f"COPY {source}: no such file in the repository"
        for match in matches:
            relative = match.relative_to(REPO).as_posix()
            assert not excluded(relative, rules), f"COPY {source}: .dockerignore excludes {relative}"


def test_the_build_context_holds_what_the_install_steps_read(rules):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    make = makefile_variables()
    # `pip install -e .` reads pyproject.toml and its readme; fetch_web_assets reads the web lock.
    needed = ["pyproject.toml", pyproject["project"]["readme"], make["LOCK"], make["WEB_LOCK"]]
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        for package in REPO.glob(pattern.rstrip("*") or pattern):
            needed += [path.relative_to(REPO).as_posix() for path in package.rglob("*.py")]
    assert len(needed) > 10
    missing = [path for path in needed if not (REPO / path).is_file()]
    assert not missing, missing
    left_out = [path for path in needed if excluded(path, rules) and "__pycache__" not in path]
    assert not left_out, f".dockerignore excludes files the image build needs: {left_out}"


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        "data/raw/train.parquet",
        "data/incoming/b0001-abc.parquet",
        "models/candidate/model.safetensors",
        "registry/versions/v0001/model.onnx",
        "landing/new.csv",
        ".dvc/cache/files/md5/00/abc",
        ".dvc/config.local",
        ".env",
        "tasks/lib/__pycache__/models.cpython-311.pyc",
    ],
)
def test_data_models_and_credentials_stay_out_of_the_image(path, rules):
    assert excluded(path, rules)


def test_the_debian_packages_are_the_makefiles(instructions):
    arguments = [assignments(args) for keyword, args in instructions if keyword == "ARG"]
    packages = next(found["APT_PACKAGES"] for found in arguments if "APT_PACKAGES" in found)
    assert packages.split() == makefile_variables()["APT_PACKAGES"].split()
    installs = [args for keyword, args in instructions if keyword == "RUN" and "apt-get install" in args]
    assert installs and all(re.search(r"\$\{?APT_PACKAGES\b", args) for args in installs)


def test_the_lock_is_the_makefiles_and_installed_before_the_code(instructions):
    lock = makefile_variables()["LOCK"]
    order = [(keyword, args) for keyword, args in instructions if keyword in ("COPY", "RUN")]
    installs = [n for n, (keyword, args) in enumerate(order) if keyword == "RUN" and " -r " in f" {args} "]
    assert len(installs) == 1, "one `pip install -r` of the lock"
    named = re.findall(r"(?:^|\s)-r\s+(\S+)", order[installs[0]][1])
    assert named == [lock], f"the Dockerfile installs {named}, the Makefile's LOCK is {lock}"
    copied_before = [
        src for keyword, args in order[: installs[0]] if keyword == "COPY" for src in copy_sources(args) or []
    ]
    assert lock in copied_before and "." not in copied_before, "the lock is copied alone, before the code"
    code = [n for n, (keyword, args) in enumerate(order) if keyword == "COPY" and "." in (copy_sources(args) or [])]
    assert code and code[0] > installs[0], "the code is copied after the dependencies are installed"


def test_the_lock_suits_the_cpu_torch_step():
    # The Dockerfile installs `$(grep -E '^torch==' LOCK)` from PyTorch's CPU index, then the lock
    # from PyPI: that needs one plain `torch==<public version>` line and no --hash lines (a hash
    # pins the CUDA wheel, and hash-checking mode would not accept the +cpu one).
    text = (REPO / makefile_variables()["LOCK"]).read_text(encoding="utf-8")
    torch_lines = [line for line in text.splitlines() if line.startswith("torch==")]
    assert len(torch_lines) == 1 and re.fullmatch(r"torch==[0-9][0-9.]*", torch_lines[0]), torch_lines
    assert "--hash" not in text


def test_the_offline_environment_is_the_makefiles(instructions):
    env: dict[str, str] = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            env.update(assignments(args))
    exported = re.findall(
        r"^export\s+([A-Z_]+)\s*\??=\s*(\S+)\s*$", (REPO / "Makefile").read_text(encoding="utf-8"), re.MULTILINE
    )
    assert exported, "the Makefile exports no settings"
    for name, value in exported:
        assert env.get(name) == value, f"the Makefile exports {name}={value}, the image has {env.get(name)!r}"
    assert env["PATH"].startswith(env["VIRTUAL_ENV"] + "/bin:"), "dvc.yaml's `python -m` must be the venv's"
