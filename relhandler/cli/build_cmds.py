"""Offline commands: new, build, deploy."""

from __future__ import annotations

import re
import sys
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from relhandler.cli._app import app
from relhandler.cli._node import JsonOpt
from relhandler.cli._output import command, console, emit, say
from relhandler.errors import UsageError
from relhandler.handler.unpack import deploy as do_deploy
from relhandler.release.build import build as do_build

__all__ = ["build", "deploy", "new"]


TEMPLATES = ("project", "web")


def _render_tree(dst: Path, name: str, pkg: str, template: str = "project") -> list[Path]:
    src = resources.files("relhandler") / "templates" / template
    written: list[Path] = []

    def walk(node: resources.abc.Traversable, rel: Path) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name == "__pycache__":
                continue
            out_name = child.name.replace("__pkg__", pkg)
            if out_name.startswith("dot-"):  # dotfiles are not package data: stored as dot-NAME
                out_name = "." + out_name[4:]
            if child.is_dir():
                walk(child, rel / out_name)
            else:
                text = child.read_text().replace("{{name}}", name).replace("{{pkg}}", pkg)
                p = dst / rel / out_name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
                written.append(p)

    walk(src, Path())
    return written


@app.command()
@command
def new(
    name: Annotated[str, typer.Argument(help="Project (and release) name, e.g. chat-hub.")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create it (default: ./NAME).")
    ] = None,
    template: Annotated[
        str,
        typer.Option(help="project (a GenServer) or web (a Starlette app on a listener)."),
    ] = "project",
    json_out: JsonOpt = False,
) -> None:
    """Create a release project: pyproject, an app with a GenServer and a supervisor, tests.

    Example: relhandler new chat-hub && cd chat-hub && relhandler build
    (`--template web`: a Starlette app served by the node, see docs/web.md)
    """
    if template not in TEMPLATES:
        raise UsageError(f"unknown template {template!r}; use one of {', '.join(TEMPLATES)}")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise UsageError(f"{name!r} is not a valid project name (letters, digits, - and _)")
    pkg = name.replace("-", "_").lower()
    dst = (directory or Path(name)).resolve()
    if dst.exists() and any(dst.iterdir()):
        raise UsageError(f"{dst} exists and is not empty; pick another --dir")
    written = _render_tree(dst, name, pkg, template)
    emit(
        {"project": str(dst), "package": pkg, "files": [str(p) for p in written]},
        json_out=json_out,
        human=lambda: say(f"created {dst} (app {pkg}); next: cd {dst} && relhandler build"),
    )


@app.command()
@command
def build(
    project: Annotated[
        Path, typer.Option(help="Project directory (with pyproject.toml).")
    ] = Path(),
    out: Annotated[
        Path | None, typer.Option(help="Output dir (default: PROJECT/_build/rel).")
    ] = None,
    find_links: Annotated[
        list[Path] | None,
        typer.Option(
            "--find-links",
            metavar="DIR",
            help="A directory of wheels to bundle the dependencies from, with no package "
            "index (repeatable; PROJECT/_build/wheels holds the last build's).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build the release directory and its reproducible tarball.

    Example: SOURCE_DATE_EPOCH=1700000000 relhandler build --project . --json
    (offline: relhandler build --find-links _build/wheels)
    """
    links = [p.resolve() for p in find_links or []]
    if sys.stderr.isatty() and not json_out:
        with console.status("building release…"):
            res = do_build(project, out, find_links=links)
    else:
        res = do_build(project, out, find_links=links)
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res).items()}

    def human() -> None:
        t = Table("release", "version", "tarball", "size", "sha256")
        cells = (res.name, res.version, str(res.tarball), f"{res.size:,}", res.sha256[:16] + "…")
        t.add_row(*(Text(c) for c in cells))
        console.print(t)

    emit(data, json_out=json_out, human=human)


@app.command()
@command
def deploy(
    tarball: Annotated[Path, typer.Argument(help="A release tarball from `relhandler build`.")],
    root: Annotated[Path, typer.Option("--root", help="The release root to create.")],
    json_out: JsonOpt = False,
) -> None:
    """First install on a host (no node needed): verify, extract, mark permanent.

    Example: relhandler deploy sample-1.0.0.tar.gz --root /srv/sample
    """
    res = do_deploy(tarball.resolve(), root.resolve())
    emit(
        asdict(res),
        json_out=json_out,
        human=lambda: say(
            f"deployed {res.name} {res.version} into {root}; "
            f"start it with `relhandler start --root {root}`"
        ),
    )
