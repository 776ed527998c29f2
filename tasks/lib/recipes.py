"""Recipes: params overlays for a data set or a goal, merged into params.yaml.

A recipe is `recipes/<name>.yaml`, with the nesting of params.yaml and only the keys it
changes. `textclf recipe <name>` merges it into params.yaml (a reviewable change: `git diff
params.yaml`), keeping the file's comments and order through ruamel.yaml's round trip, as DVC's
own `dvc exp run -S` does; the merged file is validated before it replaces params.yaml.
`recipe_arguments` gives the same change as `-S` arguments of `dvc exp run`.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import yaml

from tasks.lib.config import PARAMS_FILE, load_params
from tasks.lib.errors import ConfigError
from tasks.lib.io import atomic_path

RECIPES = "recipes"


def recipe_names(root: Path) -> list[str]:
    """The recipes in `<root>/recipes`, by name."""
    return sorted(path.stem for path in (root / RECIPES).glob("*.yaml"))


def load_recipe(root: Path, name: str) -> dict[str, Any]:
    """The overlay of recipe `name`.

    Raises:
        ConfigError: no such recipe (the message lists them), or not a YAML mapping.
    """
    path = root / RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no such recipe; there are {recipe_names(root)}")
    try:
        overlay = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(overlay, dict):
        raise ConfigError(f"{path}: expected a mapping with the nesting of params.yaml")
    return overlay


def _leaves(overlay: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every value that is not itself a mapping."""
    found: list[tuple[tuple[str, ...], Any]] = []
    for key, value in overlay.items():
        path = (*prefix, str(key))
        found += _leaves(value, path) if isinstance(value, dict) and value else [(path, value)]
    return found


# A key DVC's `-S` (Hydra's override grammar) can name in a dotted path; others (`f1.*`) are set
# as keys of their parent's mapping value.
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _hydra(value: Any) -> str:
    """`value` in Hydra's override grammar: strings quoted, mappings with bare keys (the grammar
    takes `{f1.*: {min: 0.6}}`, not JSON's quoted keys)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_hydra(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra(item) for item in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)  # numbers, true/false, null


def recipe_arguments(overlay: dict[str, Any]) -> list[str]:
    """The overlay as `dvc exp run` arguments: `-S ++key=value` per leaf (`++`: set, or add a key
    params.yaml lacks), a key DVC cannot name in a path set within its parent's mapping (merged)."""
    grouped: dict[tuple[str, ...], Any] = {}
    for path, value in _leaves(overlay):
        plain = next((i for i, key in enumerate(path) if not _PLAIN_KEY.match(key)), len(path))
        if plain == len(path):
            grouped[path] = value
            continue
        node = grouped.setdefault(path[:plain], {})
        for key in path[plain:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    arguments = []
    for path, value in grouped.items():
        dotted = ".".join(path)
        if value == {}:  # Hydra merges mappings: an empty one clears only after a delete
            arguments += ["-S", f"~{dotted}"]
        arguments += ["-S", f"++{dotted}={_hydra(value)}"]
    return arguments


def _flow(value: Any) -> Any:
    """Lists and maps written inline (`[PER, ORG]`), as params.yaml writes them."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, (list, dict)):
        node = CommentedSeq(value) if isinstance(value, list) else CommentedMap(value)
        node.fa.set_flow_style()
        return node
    return value


def apply_recipe(root: Path, name: str) -> list[str]:
    """Merge recipe `name` into `<root>/params.yaml`; returns the changes, `key: old -> new`.

    Raises:
        ConfigError: the recipe is missing or unreadable, or the merged params are invalid (an
            unknown key or a bad value, named); params.yaml is then left as it was.
    """
    from ruamel.yaml import YAML

    overlay = load_recipe(root, name)
    handler = YAML()  # round trip: comments, order and quoting stay
    handler.preserve_quotes = True
    handler.width = 4096  # long lines stay as they are
    # null stays `null` (ruamel writes an empty value otherwise)
    handler.representer.add_representer(
        type(None), lambda representer, _: representer.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    params_path = root / PARAMS_FILE
    document = handler.load(params_path.read_text(encoding="utf-8"))
    changes = []
    for path, value in _leaves(overlay):
        *parents, leaf = path
        key = ".".join(path)
        node = document
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = _flow({})  # a new mapping inline, as params.yaml writes its rules
            node = node[part]
        old = node.get(leaf, "(unset)")
        if old != value:
            changes.append(f"{key}: {json.dumps(old, default=str)} -> {json.dumps(value)}")
            node[leaf] = _flow(value)
    text = io.StringIO()
    handler.dump(document, text)
    with atomic_path(params_path) as staged:
        staged.write_text(text.getvalue(), encoding="utf-8")
        try:
            load_params(root, staged.name)
        except ConfigError as exc:
            problems = str(exc).replace(f"{staged}: ", "")  # the staged copy's name means nothing to a reader
            raise ConfigError(f"recipe {name!r} does not fit {params_path} (left unchanged): {problems}") from None
    return changes
