"""From a file in a built release back to the project file it was copied from.

``relhandler build`` copies ``src/<pkg>/...`` to ``_build/rel/<name>/lib/<app>-<vsn>/<pkg>/...``
and the appup to ``lib/<app>-<vsn>/<app>.appup.toml``. A message about one of those files
should name the file the user edits: :func:`shown` gives the source path (relative to the
working directory when it is under it) when the project that built the release is found
next to it (``<project>/_build/rel/<name>``), its config names that application version,
and the source still has the built content; otherwise the built path itself.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from relhandler.errors import RelhandlerError
from relhandler.release.config import BuildConfig, read_config

__all__ = ["shown", "source_of"]


@functools.lru_cache(maxsize=16)
def _config(project: Path) -> BuildConfig | None:
    try:
        return read_config(project)
    except (RelhandlerError, OSError):
        return None


def source_of(built: Path) -> Path | None:
    """The project file ``built`` (a file under a built release's ``lib/``) came from, or
    None when it cannot be told (see the module docstring)."""
    built = built.resolve()
    parts = built.parts
    if "lib" not in parts:
        return None
    i = len(parts) - 1 - parts[::-1].index("lib")
    if i + 2 >= len(parts):
        return None
    rel_root = Path(*parts[:i])
    if (rel_root.parent.name, rel_root.parent.parent.name) != ("rel", "_build"):
        return None
    cfg = _config(rel_root.parent.parent.parent)
    if cfg is None or cfg.name != rel_root.name:
        return None
    app_dir, rest = parts[i + 1], parts[i + 2 :]
    for app in cfg.apps:
        if f"{app.name}-{app.version}" != app_dir:
            continue
        if rest == (f"{app.name}.appup.toml",):
            src = app.appup
        elif rest[0] == app.package:
            src = app.path.joinpath(*rest[1:])
        else:
            src = None
        try:
            same = src is not None and src.read_bytes() == built.read_bytes()
        except OSError:
            same = False
        return src if same else None
    return None


def shown(built: Path) -> str:
    """How a message names ``built``: its source under the project (relative to the working
    directory when it is below it), else ``built`` as given."""
    src = source_of(built)
    if src is None:
        return str(built)
    try:
        return os.path.relpath(src) if src.resolve().is_relative_to(Path.cwd()) else str(src)
    except (OSError, ValueError):
        return str(src)
