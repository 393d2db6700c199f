"""The command reference is the Typer app's, and every `choiros-infra ...` command line the
README or a runbook shows exists, with the options it uses."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from choiros_infra.cli import app
from choiros_infra.command_reference import END, START, commands, embed, options

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "runbooks" / "90-reference" / "commands.md"
# The README, the runbooks, and the CI step scripts the workflows run.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs" / "runbooks").rglob("*.md")),
             *sorted((ROOT / "scripts" / "ci").glob("*.sh"))]
# `choiros-infra` (as typed, or as .venv/bin/choiros-infra) and what follows on its line, up to
# the end of a code span, a table cell, a sentence or a shell separator.
INVOCATION = re.compile(r"choiros-infra((?:[ \t]+[^\s`|;()&]+)*)")
KNOWN = commands(app)


def test_the_command_table_is_the_apps() -> None:
    text = REFERENCE.read_text()
    assert START in text and END in text, f"{REFERENCE} lacks the command table markers"
    if os.environ.get("UPDATE_DOCS") == "1":
        REFERENCE.write_text(embed(text, app))
        text = REFERENCE.read_text()
    assert embed(text, app) == text, (
        "commands.md's command table is stale: "
        "UPDATE_DOCS=1 .venv/bin/pytest tests/unit/test_docs_commands.py")


def invocations(text: str) -> list[tuple[int, str, list[str]]]:
    """(line, command path, options) of every choiros-infra command line in ``text``; shell
    continuations (a trailing backslash) join the next line."""
    found = []
    joined = text.replace("\\\n", " ")
    for number, line in enumerate(joined.splitlines(), 1):
        for match in INVOCATION.finditer(line):
            words = match.group(1).split()
            path: list[str] = []
            while words and not words[0].startswith("-") and " ".join([*path, words[0]]) in {
                    " ".join(k.split()[:len(path) + 1]) for k in KNOWN}:
                path.append(words.pop(0))
            if " ".join(path) in KNOWN:
                # After a bare `--`, words belong to pytest or the remote command.
                mine = words[:words.index("--")] if "--" in words else words
                used = [w.split("=")[0] for w in mine if re.fullmatch(r"--?[a-z][a-z-]*(=.*)?", w)]
                found.append((number, " ".join(path), used))
            elif path or (words and re.fullmatch(r"[a-z][a-z-]+", words[0])):
                found.append((number, " ".join([*path, *words[:1]]), []))
    return found


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_exists_with_its_options(document: Path) -> None:
    problems = []
    for line, path, used in invocations(document.read_text()):
        if path not in KNOWN:
            problems.append(f"{document.name}:{line}: `choiros-infra {path}` is no command")
            continue
        unknown = [o for o in used if o not in options(KNOWN[path])]
        if unknown:
            problems.append(f"{document.name}:{line}: `choiros-infra {path}` has no "
                            f"{', '.join(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_scanner_finds_a_wrong_flag_and_a_missing_command() -> None:
    text = ("run `.venv/bin/choiros-infra verify --stack production --ssh-kye k`\n"
            "then `choiros-infra kitchen bake --name x`\n"
            "and `choiros-infra kitchen ssh --name x -- journalctl -b`\n")
    assert invocations(text) == [(1, "verify", ["--stack", "--ssh-kye"]),
                                 (2, "kitchen bake", []), (3, "kitchen ssh", ["--name"])]
    assert "--ssh-kye" not in options(KNOWN["verify"])
