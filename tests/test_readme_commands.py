"""Every `dvc`, `git` and `make` command the READMEs show is one those tools accept.

The end-to-end tests run the README's marked blocks; commands elsewhere (inline `code`
spans, unmarked blocks) were never run, and one of them (`dvc metrics show --targets`)
failed in a user's terminal. This parses each of them instead of running it: dvc with its
own argparse parser, git against its `-h` usage, make with `make -n`. Seconds, offline.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

READMES = [ROOT / "README.md", ROOT / "bench" / "README.md"]
TOOLS = ("dvc", "git", "make")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def shell_commands(line: str) -> list[str]:
    """The simple commands of a shell line: comment dropped, split at && || ; and |."""
    line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0]
    return [part.strip() for part in re.split(r"&&|\|\||;|\|", line) if part.strip()]


def readme_commands(text: str) -> list[str]:
    """Each dvc/git/make command in code blocks (bash ones: every line) and inline spans.

    Leading VAR=value assignments are dropped (`AIRFOIL_SOURCE=... make pipeline`). A span
    may wrap across lines in the markdown source."""
    found = []
    blocks = FENCE.findall(text)
    pieces = [line for block in blocks for line in block.splitlines()]
    prose = FENCE.sub("", text)
    pieces += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose)]
    for piece in pieces:
        for command in shell_commands(piece):
            words = command.split()
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
                words.pop(0)
            # A lone `dvc` names the program ("the real `dvc` CLI"), not a command.
            if len(words) > 1 and words[0] in TOOLS:
                found.append(" ".join(words))
    return found


def dvc_error(args: list[str]) -> str | None:
    """DVC's own parser on the arguments: None if it accepts them, else its message."""
    from dvc.cli import DvcParserError
    from dvc.cli.parser import get_main_parser

    messages = io.StringIO()
    handler = logging.StreamHandler(messages)  # DVC logs "ERROR: unrecognized arguments"
    logging.getLogger("dvc").addHandler(handler)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(messages):
            get_main_parser().parse_args(args)
    except (DvcParserError, SystemExit):
        return messages.getvalue().strip() or "rejected"
    finally:
        logging.getLogger("dvc").removeHandler(handler)
    return None


GIT_SUBCOMMANDS = {"remote": {"add", "set-url", "get-url", "remove", "rename", "show",
                              "prune", "update", "set-head", "set-branches"}}


def git_error(args: list[str], repo: Path) -> str | None:
    """git has no dry parser for every command; its usage (`git <cmd> [<sub>] -h`, exit 129
    with a usage text) names every option, so an unknown command or option shows."""
    command = args[:1]
    if args[0] in GIT_SUBCOMMANDS and len(args) > 1 and not args[1].startswith("-"):
        if args[1] not in GIT_SUBCOMMANDS[args[0]]:
            return f"git {args[0]} has no subcommand {args[1]}"
        command = args[:2]
    usage = subprocess.run(["git", *command, "-h"], cwd=repo, capture_output=True, text=True)
    text = usage.stdout + usage.stderr
    if usage.returncode != 129 or "usage: git" not in text:
        return f"git {' '.join(command)} is not a git command: {text.strip()[:200]}"
    for word in args[len(command):]:
        if word == "--" or not word.startswith("-"):
            continue
        if word.startswith("--"):
            name = word.split("=", 1)[0][2:]
            options = {f"--{name}", f"--[no-]{name}", f"--[no-]{name.removeprefix('no-')}"}
            if not any(re.search(re.escape(option) + r"(?![\w-])", text) for option in options):
                return f"git {' '.join(command)} has no option {word}"
        else:  # -qam: each letter an option
            for letter in word[1:]:
                if not re.search(rf"(?<![\w-])-{re.escape(letter)}\b", text):
                    return f"git {' '.join(command)} has no option -{letter}"
    return None


def make_error(args: list[str]) -> str | None:
    """`make -n` prints a target's recipe without running it; an unknown target fails."""
    result = subprocess.run(["make", "-n", "-C", str(ROOT), *args[1:]],
                            capture_output=True, text=True)
    return None if result.returncode == 0 else result.stderr.strip()


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory) -> Path:
    """git -h of some commands (remote set-url) needs a repository to run in."""
    repo = tmp_path_factory.mktemp("git")
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def errors(text: str, repo: Path) -> list[str]:
    problems = []
    for command in readme_commands(text):
        try:
            args = shlex.split(command)
        except ValueError as error:
            problems.append(f"{command}: {error}")
            continue
        check = {"dvc": lambda: dvc_error(args[1:]), "git": lambda: git_error(args[1:], repo),
                 "make": lambda: make_error(args)}[args[0]]
        if (problem := check()) is not None:
            problems.append(f"{command}\n    {problem}")
    return problems


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_command_in_the_readme_is_accepted_by_its_tool(readme, git_repo):
    text = readme.read_text()
    assert errors(text, git_repo) == []


def test_the_readme_shows_commands_of_every_tool_in_blocks_and_spans():
    """The extraction itself: it must find the block lines and the inline spans, or the
    test above would pass on nothing."""
    commands = readme_commands((ROOT / "README.md").read_text())
    assert {command.split()[0] for command in commands} == set(TOOLS)
    assert "dvc exp run --temp -n bs20 -S batch_size=20" in commands  # a block line
    assert "make pipeline" in commands                                # a block, and spans
    assert "git push origin main" in commands
    assert "dvc metrics diff A B --targets metrics/evaluate.json --no-path" in commands
    assert "make pipeline" in readme_commands("`AIRFOIL_SOURCE=/x make pipeline`")
    assert readme_commands("`dvc\nrepro`, `dvc[s3]`, `dvc` and `dvc.yaml`") == ["dvc repro"]
    assert readme_commands("```\ngit checkout -- . && dvc checkout # back\n```") == [
        "git checkout -- .", "dvc checkout"]


@pytest.mark.parametrize("slip", [
    "`dvc metrics show --targets metrics/evaluate.json`",  # the one a user hit
    "`dvc exp run -S`",                                    # an option without its value
    "`dvc exp shwo`",
    "```bash\ngit remote ad origin <url>\n```",
    "`git push --dry-runn origin main`",
    "`git commit -qxm x`",
    "`make pipelin`",
])
def test_a_command_the_tool_rejects_is_reported(slip, git_repo):
    assert len(errors(slip, git_repo)) == 1
