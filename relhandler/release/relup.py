"""Appup scripts → low-level relup instructions, exactly as OTP's ``systools_rc``; and the
``relup.toml`` model.

``translate_scripts(mode, scripts, apps, pre_apps)`` takes one high-level script per
application (instructions in the array form of formats.md §4) and returns the low-level
instruction arrays of formats.md §5. The algorithm and its error precedence are OTP 25's
(``relhandler/release/_systools_rc.py``); ties left open by dependency order are broken by
the written order (OTP's come from hash-table order and are not part of its contract).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomli_w

from relhandler.errors import RelupError, TranslationError
from relhandler.release._systools_rc import AppInfo, RcError, check_op, translate
from relhandler.terms import from_term, to_term

__all__ = [
    "AppInfo",
    "Relup",
    "RelupEntry",
    "describe_reason",
    "dump_relup",
    "parse_relup",
    "read_relup",
    "translate_scripts",
    "translate_terms",
]


def describe_reason(reason: Any) -> str:
    """A one-line human explanation of a systools_rc reason."""
    tag = reason[0] if isinstance(reason, tuple) else reason
    arg = reason[1] if isinstance(reason, tuple) and len(reason) > 1 else None
    hints = {
        "bad_instruction": f"unknown instruction or wrong arity: {arg!r}",
        "bad_module": f"a module name must be a string, got {arg!r}",
        "bad_change": f'change must be "soft" or ["advanced", EXTRA], got {arg!r}',
        "bad_mod_type": f'mod_type must be "static" or "dynamic", got {arg!r}',
        "bad_purge_method": f'purge must be "soft_purge" or "brutal_purge", got {arg!r}',
        "bad_list": f"expected an array, got {arg!r}",
        "bad_args_list": f"apply arguments must be an array, got {arg!r}",
        "bad_node": f"a node name must be a string, got {arg!r}",
        "bad_application": f"an application name must be a string, got {arg!r}",
        "bad_func": f"a function name must be a string, got {arg!r}",
        "bad_lib": f"an application name must be a string, got {arg!r}",
        "bad_lib_vsn": f"an application version must be a string, got {arg!r}",
        "bad_timeout": f'timeout must be "default", "infinity" or an integer > 0, got {arg!r}',
        "bad_mode": f'code_change mode must be "up" or "down", got {arg!r}',
        "bad_start_type": f"start type must be permanent, transient, temporary, load or none, "
        f"got {arg!r}",
        "bad_code_change": f"code_change entries must be [module, extra], got {arg!r}",
        "not_yet_implemented": "mnesia_backup is not implemented (as in OTP)",
        "too_many_point_of_no_return": "a script may hold at most one point_of_no_return",
        "bad_op_before_point_of_no_return": f"only load_object_code and apply may come before "
        f"point_of_no_return, got {arg!r}",
        "no_object_code": f"load of {arg!r} has no load_object_code before point_of_no_return",
        "suspended_not_resumed": f"suspended but never resumed: {arg!r}",
        "resumed_not_suspended": f"resumed but never suspended: {arg!r}",
        "start_not_stop": f"started but never stopped: {arg!r}",
        "stop_not_start": f"stopped but never started: {arg!r}",
        "no_such_application": f"application {arg!r} is not in the release",
        "removed_application_present": f"application {arg!r} is removed but still in the "
        f"new release",
        "muldef_module": f"module {arg!r} has more than one instruction; keep one",
        "undef_module": f"dep_mods names {arg!r}, which has no instruction of its own; add one "
        f"or drop it from dep_mods",
        "no_such_module": f"module {arg!r} belongs to no application of the release",
        "conflicting_versions": f"application {arg!r} is loaded at two versions",
    }
    return hints.get(str(tag), f"{reason!r}")


def _apps(apps: Sequence[Any]) -> list[AppInfo]:
    out = []
    for a in apps:
        if isinstance(a, AppInfo):
            out.append(a)
        else:
            out.append(AppInfo(a[0], a[1], tuple(a[2]), a[3] if len(a) > 3 else "permanent"))
    return out


def translate_terms(
    mode: Literal["up", "down", "dn"],
    scripts: Sequence[Sequence[Any]],
    apps: Sequence[Any],
    pre_apps: Sequence[Any],
) -> list[Any]:
    """Like ``translate_scripts`` on OTP-shaped terms; raises ``TranslationError``."""
    try:
        return translate(mode, scripts, _apps(apps), _apps(pre_apps))
    except RcError as e:
        raise TranslationError(
            f"relup {mode}: {describe_reason(e.reason)}", reason=e.reason
        ) from None


def translate_scripts(
    mode: Literal["up", "down", "dn"],
    scripts: Sequence[Sequence[Any]],
    apps: Sequence[Any],
    pre_apps: Sequence[Any],
) -> list[list[Any]]:
    """High-level appup scripts (arrays) → low-level relup instructions (arrays).

    ``apps`` are the applications of the release moved *to*, ``pre_apps`` of the one moved
    *from*, each an ``AppInfo`` or a ``(name, version, modules[, start type])`` tuple.
    Raises ``TranslationError`` whose ``reason`` is OTP's reason term.
    """
    terms = [[to_term(i, f"script {k}") for i in s] for k, s in enumerate(scripts)]
    return [from_term(t) for t in translate_terms(mode, terms, apps, pre_apps)]


@dataclass(frozen=True, slots=True)
class RelupEntry:
    """One way to get here from ``vsn`` (``up``) or back to it (``down``)."""

    vsn: str
    description: str
    instructions: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Relup:
    """``releases/<vsn>/relup.toml``."""

    version: str
    up: tuple[RelupEntry, ...] = ()
    down: tuple[RelupEntry, ...] = ()

    def up_from(self, vsn: str) -> RelupEntry | None:
        return next((e for e in self.up if e.vsn == vsn), None)

    def down_to(self, vsn: str) -> RelupEntry | None:
        return next((e for e in self.down if e.vsn == vsn), None)


def _entries(where: str, data: Any, key: str) -> tuple[RelupEntry, ...]:
    if not isinstance(data, list):
        raise RelupError(
            f"{where}: '{'up' if key == 'from' else 'down'}' must be an array of tables"
        )
    out = []
    for k, e in enumerate(data):
        w = f"{where}[{k}]"
        if not isinstance(e, dict):
            raise RelupError(f"{w} must be a table with {key}, description, instructions")
        extra = set(e) - {key, "description", "instructions"}
        if extra:
            raise RelupError(f"{w}: unknown key {sorted(extra)[0]!r}")
        vsn = e.get(key)
        instrs = e.get("instructions")
        if not isinstance(vsn, str) or not isinstance(instrs, list):
            raise RelupError(f'{w}: needs {key} = "VSN" and instructions = [...]')
        for j, i in enumerate(instrs):
            try:
                check_op(to_term(i, f"{w}.instructions[{j}]"))
            except RcError as err:
                raise RelupError(
                    f"{w}.instructions[{j}]: {i!r}: {describe_reason(err.reason)}"
                ) from None
        out.append(RelupEntry(vsn, str(e.get("description", "")), tuple(instrs)))
    return tuple(out)


def parse_relup(data: Mapping[str, Any], where: str = "relup.toml") -> Relup:
    """Validate a relup document: shape and every low-level instruction's syntax."""
    extra = set(data) - {"version", "up", "down"}
    if extra:
        raise RelupError(f"{where}: unknown key {sorted(extra)[0]!r}; allowed: version, up, down")
    v = data.get("version")
    if not isinstance(v, str):
        raise RelupError(f'{where}: missing version = "VSN"')
    return Relup(
        v,
        _entries(f"{where}: up", data.get("up", []), "from"),
        _entries(f"{where}: down", data.get("down", []), "to"),
    )


def read_relup(path: Path) -> Relup:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise RelupError(f"{path}: {e}") from e
    except OSError as e:
        raise RelupError(f"{path}: cannot read: {e.strerror}") from e
    return parse_relup(data, str(path))


def dump_relup(r: Relup) -> str:
    doc: dict[str, Any] = {"version": r.version}
    doc["up"] = [
        {"from": e.vsn, "description": e.description, "instructions": list(e.instructions)}
        for e in r.up
    ]
    doc["down"] = [
        {"to": e.vsn, "description": e.description, "instructions": list(e.instructions)}
        for e in r.down
    ]
    return tomli_w.dumps(doc, multiline_strings=False)
