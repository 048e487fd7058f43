"""Appup files (``<app>.appup.toml``, formats.md §4): read, validate, select by version.

Validation gathers every problem of the file and reports them together, each naming the
entry and instruction index, what is wrong and the accepted forms.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from relhandler.errors import AppupError
from relhandler.release._systools_rc import RcError, check_op, expand_script
from relhandler.release.relup import describe_reason
from relhandler.terms import to_term

__all__ = ["Appup", "AppupEntry", "dump_appup", "parse_appup", "read_appup", "select"]


@dataclass(frozen=True, slots=True)
class AppupEntry:
    """One ``[[up]]`` or ``[[down]]`` table."""

    key: str
    is_pattern: bool
    instructions: tuple[Any, ...]

    def matches(self, vsn: str) -> bool:
        """OTP's rule: an exact key equals ``vsn``; a pattern's leftmost match is all of it."""
        if not self.is_pattern:
            return self.key == vsn
        m = re.search(self.key, vsn)
        return m is not None and m.start() == 0 and m.end() == len(vsn)


@dataclass(frozen=True, slots=True)
class Appup:
    """An application's appup: the version it leads to, and its up/down entries."""

    version: str
    up: tuple[AppupEntry, ...]
    down: tuple[AppupEntry, ...]
    path: str | None = None


def select(entries: Sequence[AppupEntry], vsn: str) -> AppupEntry | None:
    """The first entry matching ``vsn`` (first match wins, as in OTP), or None."""
    for e in entries:
        if e.matches(vsn):
            return e
    return None


def _instructions(where: str, raw: Any, problems: list[str]) -> tuple[Any, ...]:
    if not isinstance(raw, list):
        problems.append(f"{where}: 'instructions' must be an array of instructions")
        return ()
    seen: dict[str, int] = {}
    for k, instr in enumerate(raw):
        w = f"{where}.instructions[{k}]"
        try:
            term = to_term(instr, w)
            for t in expand_script([term]):
                check_op(t)
        except AppupError as e:
            problems.append(e.message)
            continue
        except RcError as e:
            problems.append(f"{w}: {instr!r}: {describe_reason(e.reason)}")
            continue
        if (
            isinstance(term, tuple)
            and len(term) > 1
            and term[0] in ("update", "load_module", "add_module", "delete_module")
        ):
            mod = term[1]
            if mod in seen:
                problems.append(
                    f"{w}: module {mod!r} already has instruction [{seen[mod]}]; "
                    f"keep one instruction per module"
                )
            else:
                seen[mod] = k
    return tuple(raw)


def _entries(where: str, raw: Any, key: str, problems: list[str]) -> tuple[AppupEntry, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(f"{where} must be an array of tables ([[{where.rsplit(' ', 1)[-1]}]])")
        return ()
    pattern_key = f"{key}_pattern"
    out = []
    for k, e in enumerate(raw):
        w = f"{where}[{k}]"
        if not isinstance(e, dict):
            problems.append(f"{w} must be a table")
            continue
        unknown = sorted(set(e) - {key, pattern_key, "instructions"})
        if unknown:
            problems.append(
                f"{w}: unknown key {unknown[0]!r}; allowed: {key}, {pattern_key}, instructions"
            )
        has_exact, has_pat = key in e, pattern_key in e
        if has_exact == has_pat:
            problems.append(f'{w}: give exactly one of {key} = "VSN" or {pattern_key} = "REGEX"')
            continue
        k_val = e[key] if has_exact else e[pattern_key]
        if not isinstance(k_val, str):
            problems.append(f"{w}: {key if has_exact else pattern_key} must be a string")
            continue
        if has_pat:
            try:
                re.compile(k_val)
            except re.error as err:
                problems.append(f"{w}: {pattern_key} {k_val!r} is not a valid regex: {err}")
                continue
        instrs = _instructions(w, e.get("instructions", []), problems)
        out.append(AppupEntry(k_val, has_pat, instrs))
    return tuple(out)


def parse_appup(data: Mapping[str, Any], where: str = "appup") -> Appup:
    """Validate an appup document; raises ``AppupError`` listing every problem."""
    problems: list[str] = []
    unknown = sorted(set(data) - {"version", "up", "down"})
    if unknown:
        problems.append(f"{where}: unknown key {unknown[0]!r}; allowed: version, up, down")
    version = data.get("version")
    if not isinstance(version, str):
        problems.append(f'{where}: missing version = "VSN" (the app version this appup leads to)')
    up = _entries(f"{where}: up", data.get("up"), "from", problems)
    down = _entries(f"{where}: down", data.get("down"), "to", problems)
    if problems:
        msg = (
            problems[0]
            if len(problems) == 1
            else f"{len(problems)} problems: " + "; ".join(problems)
        )
        raise AppupError(msg, details={"problems": problems, "file": where})
    assert isinstance(version, str)
    return Appup(version, up, down, where)


def read_appup(path: Path, *, shown_as: str | None = None) -> Appup:
    """Read and validate an appup file; messages name it as ``shown_as`` (the user's own
    file, when ``path`` is a built copy of it) or as ``path``."""
    where = shown_as or str(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as e:
        raise AppupError(
            f"{where}: no appup file; write one or run `relhandler appup generate`", code="no_appup"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise AppupError(f"{where}: {e} — fix the TOML syntax") from e
    return parse_appup(data, where)


def dump_appup(a: Appup) -> str:
    def entry(e: AppupEntry, key: str) -> dict[str, Any]:
        return {
            (f"{key}_pattern" if e.is_pattern else key): e.key,
            "instructions": list(e.instructions),
        }

    return tomli_w.dumps(
        {
            "version": a.version,
            "up": [entry(e, "from") for e in a.up],
            "down": [entry(e, "to") for e in a.down],
        }
    )
