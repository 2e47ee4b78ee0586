"""The README's commands work as printed after the README's own setup.

That setup puts wattd in ``.venv/bin``, which is not on ``PATH``, so every
command outside the service section calls ``.venv/bin/wattd``; the service
section installs ``/opt/wattd`` and calls ``/opt/wattd/bin/wattd``. Every
subcommand named must exist and every command line must parse.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.paths import REPO_ROOT
from wattd.cli import build_parser, main

ROOT = REPO_ROOT
README = ROOT / "README.md"
SERVICE = "Running as a service"
WATTD = {None: ".venv/bin/wattd", SERVICE: "/opt/wattd/bin/wattd"}
# Not on PATH on Debian or after the README's setup; python3 is.
BARE = {"wattd", "python", "pip"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
PROGRAM = re.compile(r"(wattd|python3?|pip3?|\S*/bin/(wattd|python3?|pip3?))")


def sections() -> list[tuple[str, str]]:
    """(title, text) of each ``## `` section; the part before the first is ''."""
    out: list[tuple[str, str]] = []
    title, lines = "", list[str]()
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            out.append((title, "\n".join(lines)))
            title, lines = line[3:].strip(), []
        else:
            lines.append(line)
    out.append((title, "\n".join(lines)))
    return out


FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def shell_commands(text: str) -> list[list[str]]:
    """Simple commands of the section's shell blocks, without sudo or comments."""
    out = []
    for lang, block in FENCE.findall(text):
        if lang not in {"sh", "bash", "shell"}:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in SEPARATORS:
                    if words:
                        out.append(words)
                    words = []
                else:
                    words.append(token)
    return [strip_sudo(strip_redirects(c)) for c in out]


REDIRECTS = {">", ">>", "<", "2>", "2>>"}


def strip_redirects(words: list[str]) -> list[str]:
    """The command without its shell redirections (``> out.jsonl``)."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in REDIRECTS:
            skip = True
        else:
            out.append(word)
    return out


def strip_sudo(words: list[str]) -> list[str]:
    while words and (words[0] == "sudo" or re.fullmatch(r"\w+=\S*", words[0])):
        words = words[1:]
    return words


def inline_commands(text: str) -> list[list[str]]:
    """Inline code spans in prose that run wattd, python or pip.

    A span that is only the program (``.venv/bin/wattd``) names it; it is
    not a command.
    """
    prose = FENCE.sub("", text)
    spans = re.findall(r"`([^`]+)`", prose)
    out = []
    for span in spans:
        words = shlex.split(" ".join(span.split()))
        if len(words) > 1 and PROGRAM.fullmatch(words[0]):
            out.append(words)
    return out


@functools.cache
def full_parser() -> argparse.ArgumentParser:
    return build_parser()


def subcommand_path(words: list[str]) -> list[str]:
    """The leading words that name a command (and sub-command) of wattd."""
    parser = full_parser()
    path: list[str] = []
    for word in words:
        subparsers = [
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ]
        if not subparsers or word not in subparsers[0].choices:
            break
        path.append(word)
        parser = subparsers[0].choices[word]
    return path


def readme_commands() -> list[tuple[str, list[str], bool]]:
    """(section, words, in a shell block) of every command the README shows."""
    out = []
    for title, text in sections():
        out += [(title, words, True) for words in shell_commands(text)]
        out += [(title, words, False) for words in inline_commands(text)]
    return out


def test_the_readme_shows_wattd_commands_in_shell_blocks_and_prose() -> None:
    commands = readme_commands()
    programs = {Path(words[0]).name for _, words, _ in commands}
    assert "wattd" in programs
    assert sum(1 for _, w, block in commands if block and "wattd" in w[0]) >= 15
    assert any(not block for _, w, block in commands if "wattd" in w[0])
    first = sections()[0][1]
    [setup] = [b for lang, b in FENCE.findall(first) if lang == "sh"]
    assert setup.splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -q -e ."
        " && .venv/bin/wattd demo",
        "bash .ci/test",
    ]


def test_every_command_runs_as_printed_after_the_readme_setup() -> None:
    wrong = []
    for title, words, in_block in readme_commands():
        program = words[0]
        name = Path(program).name
        if name != "wattd":
            if program in BARE:
                wrong.append((title, " ".join(words), f"{program} is not on PATH"))
            continue
        expected = WATTD.get(title, WATTD[None])
        if program == expected:
            continue
        naming_only = (
            not in_block
            and program == "wattd"
            and len(subcommand_path(words[1:])) == len(words) - 1
        )
        if not naming_only:
            wrong.append((title, " ".join(words), f"call it as {expected}"))
    assert wrong == []


def test_every_wattd_subcommand_named_exists_and_every_command_parses() -> None:
    helped: set[tuple[str, ...]] = set()
    for title, words, _ in readme_commands():
        if Path(words[0]).name != "wattd":
            continue
        args = words[1:]
        path = subcommand_path(args)
        assert path, f"{title}: {' '.join(words)} names no wattd command"
        if tuple(path) not in helped:
            helped.add(tuple(path))
            out = io.StringIO()
            with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
                main([*path, "--help"])
            assert done.value.code == 0
            assert f"usage: wattd {' '.join(path)}" in out.getvalue()
        if len(path) < len(args) and not {"-h", "--help"} & set(args):
            # Options and arguments as printed must be ones wattd takes.
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    build_parser(args[0]).parse_args(args)
            except SystemExit:
                pytest.fail(f"{title}: {' '.join(words)}: {err.getvalue().strip()}")
    assert ("report",) in helped
    assert ("radio", "setup-meter") in helped


def test_the_readme_wattd_is_the_one_the_setup_installs() -> None:
    wattd = ROOT / ".venv" / "bin" / "wattd"
    if not wattd.exists():
        pytest.skip("no .venv in the checkout (the README's setup was not run)")
    run = subprocess.run(
        [WATTD[None], "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("wattd ")
    service = dict(sections())[SERVICE]
    assert "python3 -m venv /opt/wattd" in service
    assert "/opt/wattd/bin/pip install" in service
