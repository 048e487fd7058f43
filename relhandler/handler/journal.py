"""The intent journal: release operations that change several things, made crash-safe.

An operation that changes more than one file or directory of a release root (unpack,
remove, make_permanent, reboot_old, the disk part of install, deploy) first writes
``releases/journal.toml``: the old and new text of every release file it rewrites
(``RELEASES.toml``, ``start.toml``) and the directories it creates or deletes. The
journal's ``state`` is the commit point:

* ``prepared`` — the operation may have created some of its directories: recovery
  **rolls back** (deletes them, puts the old files back);
* ``committed`` — recovery **rolls forward** (writes the new files, deletes what the
  operation removes).

:func:`recover` runs at boot and at the start of every operation; both directions are
idempotent, so a crash during recovery is simply recovered again. It also deletes what
only an interrupted operation leaves: ``.unpack-*`` staging directories and the temp files
of an atomic write. Directories are only ever deleted when no listed release uses them, and
a journal may name nothing but ``lib/<dir>`` and ``releases/<dir>``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import tomli_w

from relhandler.errors import ConfigError, ReleaseError
from relhandler.handler import store

__all__ = [
    "FileChange",
    "Intent",
    "changes",
    "clean_leftovers",
    "expected_releases",
    "io_error",
    "journal_path",
    "read_journal",
    "recover",
    "transact",
]

log = logging.getLogger("relhandler.journal")

State = Literal["prepared", "committed"]
Outcome = Literal["rolled_back", "completed", "pending"]

RELEASE_FILES = ("releases/RELEASES.toml", "releases/start.toml")
_TEMP_NAMES = ("RELEASES.toml", "start.toml", "journal.toml")


@dataclass(frozen=True, slots=True)
class FileChange:
    """One release file an operation rewrites (``old`` None: it did not exist)."""

    path: str
    old: str | None
    new: str


@dataclass(frozen=True, slots=True)
class Intent:
    """What one operation is about to do to a release root."""

    op: str
    version: str
    state: State = "prepared"
    files: tuple[FileChange, ...] = ()
    created: tuple[str, ...] = ()  # rolled back: deleted
    deleted: tuple[str, ...] = ()  # rolled forward: deleted


def journal_path(root: Path) -> Path:
    return root / "releases" / "journal.toml"


def _safe_dir(where: str, d: Any) -> str:
    if not isinstance(d, str):
        raise ConfigError(f"{where}: directory {d!r} must be a string")
    parts = d.split("/")
    if (
        len(parts) != 2
        or parts[0] not in ("lib", "releases")
        or parts[1] in ("", ".", "..")
        or parts[1].startswith(".")
        or "\\" in d
        or "\x00" in d
    ):
        raise ConfigError(f"{where}: {d!r} is not lib/<dir> or releases/<dir>; refused")
    return d


def _dump(intent: Intent) -> str:
    out: dict[str, Any] = {"op": intent.op, "version": intent.version, "state": intent.state}
    out["created"] = list(intent.created)
    out["deleted"] = list(intent.deleted)
    files = []
    for f in intent.files:
        row = {"path": f.path, "new": f.new}
        if f.old is not None:
            row["old"] = f.old
        files.append(row)
    out["file"] = files
    return tomli_w.dumps(out, multiline_strings=True)


def read_journal(root: Path) -> Intent | None:
    """The pending operation of ``root``, if an interrupted one left its journal."""
    path = journal_path(root)
    text = store.read_text(path)
    if text is None:
        return None
    where = str(path)
    try:
        d = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: {e} — the journal is corrupt; restore the root") from e
    state = d.get("state")
    if state not in ("prepared", "committed"):
        raise ConfigError(f"{where}: state {state!r} is not 'prepared' or 'committed'")
    files = []
    for i, f in enumerate(d.get("file", [])):
        fw = f"{where}: file[{i}]"
        if not isinstance(f, dict) or f.get("path") not in RELEASE_FILES:
            raise ConfigError(f"{fw}: path must be one of {', '.join(RELEASE_FILES)}")
        old, new = f.get("old"), f.get("new")
        if not isinstance(new, str) or not (old is None or isinstance(old, str)):
            raise ConfigError(f"{fw}: 'old' and 'new' must be strings")
        files.append(FileChange(f["path"], old, new))
    op, vsn = d.get("op"), d.get("version")
    if not isinstance(op, str) or not isinstance(vsn, str):
        raise ConfigError(f"{where}: 'op' and 'version' must be strings")
    return Intent(
        op,
        vsn,
        state,
        tuple(files),
        tuple(_safe_dir(f"{where}: created", x) for x in d.get("created", [])),
        tuple(_safe_dir(f"{where}: deleted", x) for x in d.get("deleted", [])),
    )


def _write_journal(root: Path, intent: Intent) -> None:
    store.atomic_write(journal_path(root), _dump(intent))


def _rmtree(path: Path) -> None:
    if not os.path.lexists(path):
        return
    with store.named(path):
        shutil.rmtree(path)
    store.fsync_dir(path.parent)


def clean_leftovers(root: Path) -> None:
    """Delete staging dirs and atomic-write temp files: only an interrupted operation
    leaves them, and only one operation runs on a root at a time."""
    for p in sorted(root.glob(".unpack-*")):
        _rmtree(p)
    rel = root / "releases"
    for name in _TEMP_NAMES:
        for p in sorted(rel.glob(f".{name}.*")):
            with store.named(p):
                p.unlink(missing_ok=True)


def _in_use(root: Path) -> set[str]:
    rels = store.read_releases(root)
    return rels.lib_dirs_in_use() | {f"releases/{r.version}" for r in rels.releases}


class _Progress:
    """How far a transaction got: once it deletes, it can only go forward; once its
    journal is gone, it is done (an error after that is no reason to undo anything)."""

    deleting = False
    finished = False


def _apply(root: Path, intent: Intent, progress: _Progress | None = None) -> None:
    forward = intent.state == "committed"
    for f in intent.files:
        want = f.new if forward else f.old
        path = root / f.path
        if store.read_text(path) == want:
            continue
        if want is None:
            with store.named(path):
                path.unlink(missing_ok=True)
            store.fsync_dir(path.parent)
        else:
            store.atomic_write(path, want)
    doomed = intent.deleted if forward else intent.created
    if doomed:
        keep = _in_use(root)
        if progress is not None:
            progress.deleting = True
        for d in doomed:
            if d not in keep:
                _rmtree(root / d)
    clean_leftovers(root)
    path = journal_path(root)
    with store.named(path):
        path.unlink(missing_ok=True)
    if progress is not None:
        progress.finished = True
    store.fsync_dir(path.parent)


def recover(root: Path) -> Intent | None:
    """Finish or undo an interrupted operation; returns its intent (None: nothing pending).

    Raises ``OSError`` when the disk refuses (the journal stays for the next try)."""
    intent = read_journal(root)
    if intent is None:
        clean_leftovers(root)
        return None
    log.warning(
        "recovering interrupted %s %s: %s",
        intent.op,
        intent.version,
        "rolling forward" if intent.state == "committed" else "rolling back",
    )
    _apply(root, intent)
    return intent


def expected_releases(root: Path) -> store.Releases:
    """What RELEASES.toml says once a pending journal (if any) is recovered."""
    intent = read_journal(root)
    if intent is not None:
        for f in intent.files:
            if f.path == "releases/RELEASES.toml":
                text = f.new if intent.state == "committed" else f.old
                if text is None:
                    return store.Releases()
                return store.parse_releases(text, store.releases_path(root))
    return store.read_releases(root)


def _abort(root: Path, progress: _Progress) -> Outcome:
    """After an OSError: undo if the operation has not started deleting, else finish it."""
    if progress.finished:
        # only the fsync after the journal's unlink failed: every change is on disk, and
        # should the unlink not survive a crash, recovery rolls the same changes forward
        return "completed"
    try:
        intent = read_journal(root)
        if intent is None:
            return "rolled_back"
        if intent.state == "committed" and not progress.deleting:
            intent = replace(intent, state="prepared")
            _write_journal(root, intent)
        _apply(root, intent)
        return "completed" if intent.state == "committed" else "rolled_back"
    except OSError as e:
        log.error("could not recover %s: %s", journal_path(root), store.describe_os_error(e))
        return "pending"


def io_error(what: str, e: OSError, outcome: Outcome = "rolled_back") -> ReleaseError:
    """One line: the operation, the path, the OS error, and where that leaves the root."""
    tail = {
        "rolled_back": "nothing was changed",
        "completed": "it was completed nevertheless",  # not raised by transact
        "pending": "the root is recovered at the next operation or boot",
    }[outcome]
    return ReleaseError(
        f"{what} failed: {store.describe_os_error(e)}; {tail}",
        code="io_error",
        details={"path": e.filename, "errno": e.errno, "outcome": outcome},
    )


def transact(
    root: Path,
    what: str,
    intent: Intent,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Run ``intent`` on ``root`` crash-safely; ``prepare`` creates ``intent.created``.

    A crash at any instant is finished or undone by :func:`recover`. An ``OSError`` is
    undone here when possible (a delete cannot be undone: then the rest is finished) and
    raised as a one-line ``ReleaseError`` naming ``what``, the path and the OS error
    (unless finishing the operation went through: then it returns normally)."""
    for d in (*intent.created, *intent.deleted):
        _safe_dir(what, d)  # never delete, or journal, anything else
    files = tuple(f for f in intent.files if f.old != f.new)
    intent = replace(intent, files=files)
    if not files and not intent.created and not intent.deleted:
        return
    progress = _Progress()
    try:
        if prepare is not None:
            _write_journal(root, replace(intent, state="prepared"))
            prepare()
        intent = replace(intent, state="committed")
        _write_journal(root, intent)
        _apply(root, intent, progress)
    except OSError as e:
        outcome = _abort(root, progress)
        if outcome != "completed":
            raise io_error(what, e, outcome) from e
        # a delete failed once and went through on the retry: the operation is done
        log.warning("%s: %s; finished on retry", what, store.describe_os_error(e))


def changes(
    root: Path, rels: store.Releases | None, start: store.StartFile | None
) -> list[FileChange]:
    """The FileChanges that make RELEASES.toml say ``rels`` and start.toml say ``start``."""
    out = []
    if rels is not None:
        p = store.releases_path(root)
        out.append(
            FileChange("releases/RELEASES.toml", store.read_text(p), store.render_releases(rels))
        )
    if start is not None:
        p = store.start_path(root)
        out.append(FileChange("releases/start.toml", store.read_text(p), store.render_start(start)))
    return out
