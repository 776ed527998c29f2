"""The commands of the team guide's set-up section (docs/guides/team.md), for the three-host test to run.

The test takes each command it runs from the guide, with the guide's placeholders (`s3://bucket`,
the git URL, `main`, a file name) replaced by its own, and at the end checks that it ran every one:
a command changed in the guide is the command the test runs, and one the test stops running fails it.
Only `textclf` and `prefect` commands count; git, the store's own tools and shell set-up are the reader's.
"""

from __future__ import annotations

import re
import shlex

from tests.support.repo import REPO

GUIDE = REPO / "docs" / "guides" / "team.md"
SECTION = ("## Setting it up", "## A flow run on a worker")
PROGRAMS = ("textclf", "prefect")


def guide_commands() -> list[list[str]]:
    """Each `textclf`/`prefect` command of the section's bash blocks, as argv (comments, `export` lines,
    `VAR=value` prefixes dropped; `a && b` is two commands)."""
    text = GUIDE.read_text(encoding="utf-8")
    section = text[text.index(SECTION[0]) : text.index(SECTION[1])]
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            while words:
                command = words[: words.index("&&")] if "&&" in words else words
                words = words[len(command) + 1 :]
                while command and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", command[0]):
                    command = command[1:]  # PATH=... prefix
                if ">" in command:  # the output's redirection: the test reads the output itself
                    command = command[: command.index(">")]
                if command and command[0] in PROGRAMS:
                    commands.append(command)
    return commands


class GuideCommands:
    """The guide's commands with its placeholders replaced; remembers which the test took."""

    def __init__(self, substitutions: dict[str, str]):
        self.substitutions = substitutions
        self.commands = guide_commands()
        self.taken: set[int] = set()

    def _replace(self, word: str) -> str:
        for placeholder, value in self.substitutions.items():
            if word == placeholder or word.startswith(placeholder + "/"):
                return value + word[len(placeholder) :]
        return word

    def take(self, *words: str) -> list[str]:
        """The guide's command that is `words`, or the one that starts with them; placeholders replaced."""
        found = [i for i, command in enumerate(self.commands) if command == list(words)] or [
            i for i, command in enumerate(self.commands) if command[: len(words)] == list(words)
        ]
        assert len(found) == 1, f"docs/guides/team.md: {len(found)} commands start with {shlex.join(words)!r}"
        self.taken.add(found[0])
        return [self._replace(word) for word in self.commands[found[0]]]

    def not_taken(self) -> list[str]:
        return [shlex.join(command) for i, command in enumerate(self.commands) if i not in self.taken]
