"""Regenerate the README's CLI reference from the commands' own ``--help`` output.

    python scripts/cli_reference.py           # rewrite README.md between the markers
    python scripts/cli_reference.py --check   # exit 1 if README.md is stale
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import typer

from relhandler.cli._app import _load_commands, app

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _names(t: typer.Typer, prefix: list[str]) -> list[list[str]]:
    out = []
    for c in t.registered_commands:
        name = c.name or (c.callback.__name__.replace("_", "-") if c.callback else "")
        out.append([*prefix, name])
    for g in t.registered_groups:
        assert g.typer_instance is not None
        assert g.name is not None
        out += _names(g.typer_instance, [*prefix, g.name])
    return out


def _help(cmd: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "96", "NO_COLOR": "1", "TERM": "dumb"}
    r = subprocess.run([sys.executable, "-m", "relhandler.cli", *cmd, "--help"],
                       capture_output=True, text=True, env=env, check=True)
    return "\n".join(line.rstrip() for line in r.stdout.strip().splitlines())


def render() -> str:
    _load_commands()
    parts = []
    for cmd in _names(app, []):
        parts.append(f"### `relhandler {' '.join(cmd)}`\n\n```text\n{_help(cmd)}\n```\n")
    return "\n".join(parts)


def _words(text: str) -> list[str]:
    return re.sub(r"[\u2500-\u257f]", " ", text).split()


def main() -> int:
    text = README.read_text()
    a, b = text.index(START) + len(START), text.index(END)
    new = text[:a] + "\n" + render() + text[b:]
    if "--check" in sys.argv:
        # compare words, not layout: a newer rich may draw the help boxes differently
        if _words(new) != _words(text):
            print("README.md CLI reference is stale: run python scripts/cli_reference.py")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
