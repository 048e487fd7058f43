"""The instruction vocabulary: the TOML/JSON array form ↔ Erlang-shaped terms.

Appups and relups write instructions as arrays shaped like OTP's tuples (formats.md §4–§5):
the instruction's name, its arguments, optionally an options table. Internally the
translator and the installer work on *terms* mirroring OTP exactly: atoms and strings are
``str``, tuples ``tuple``, lists ``list``. This module converts between the two.

Array forms that differ from a plain tuple → array spelling:

* low-level ``{load, {M, Pre, Post}}`` is ``["load", M, Pre, Post]`` (also ``remove``);
  ``{load_object_code, {App, Vsn, Mods}}`` is ``["load_object_code", App, Vsn, Mods]``;
  ``{apply, {M, F, A}}`` is ``["apply", M, F, A]``;
* ``{suspend, [M | {M, T}]}`` is ``["suspend", [M | [M, T]]]``; ``{code_change, Mode,
  [{M, Extra}]}`` is ``["code_change", Mode, [[M, Extra], ...]]``;
* a change ``{advanced, Extra}`` is ``["advanced", Extra]``; ``{sync_nodes, Id, {M,F,A}}`` is
  ``["sync_nodes", Id, [M, F, [A...]]]``;
* an atom-only instruction may be a bare string or a one-element array
  (``"point_of_no_return"`` or ``["point_of_no_return"]``);
* the options-table forms of formats.md §4 (``["update", M, {change = "advanced", ...}]``,
  ``["load_module", M, {...}]``, ``["add_module", M, {dep_mods = [...]}]``,
  ``["add_application", A, {type = ...}]``) become OTP's full tuples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relhandler.errors import AppupError

__all__ = [
    "ATOM_INSTRUCTIONS",
    "LOW_LEVEL",
    "from_term",
    "to_term",
]

ATOM_INSTRUCTIONS = (
    "point_of_no_return",
    "restart_new_emulator",
    "restart_emulator",
    "restart",
    "reboot",
    "mnesia_backup",
)
LOW_LEVEL = (
    "load_object_code",
    "point_of_no_return",
    "load",
    "remove",
    "purge",
    "suspend",
    "resume",
    "code_change",
    "stop",
    "start",
    "sync_nodes",
    "apply",
    "restart_new_emulator",
    "restart_emulator",
)

_UPDATE_OPTS = {"change", "extra", "pre_purge", "post_purge", "timeout", "mod_type", "dep_mods"}


def _opts(where: str, instr: list[Any], table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise AppupError(
            f"{where}: {instr!r}: unknown option {unknown[0]!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def _change_term(v: Any) -> Any:
    if isinstance(v, list) and len(v) == 2 and v[0] == "advanced":
        return ("advanced", v[1])
    return v


def to_term(instr: Any, where: str = "instruction") -> Any:
    """Convert one instruction from its array form to the OTP-shaped term.

    Forms that are structurally impossible to map raise ``AppupError``; everything else maps
    mechanically and OTP's own syntax check (in the translator) judges it.
    """
    if isinstance(instr, str):
        return instr
    if not isinstance(instr, list) or not instr or not isinstance(instr[0], str):
        raise AppupError(
            f"{where}: {instr!r} is not an instruction; write an array like "
            f'["load_module", "pkg.mod"]'
        )
    tag, args = instr[0], instr[1:]
    if not args and tag in ATOM_INSTRUCTIONS:
        return tag
    table = args[-1] if args and isinstance(args[-1], dict) else None
    if table is not None:
        return _from_options(where, instr, tag, args[:-1], table)
    if tag in ("load_object_code", "load", "remove", "apply") and len(args) == 3:
        return (tag, tuple(args))
    if tag == "suspend" and len(args) == 1 and isinstance(args[0], list):
        return (tag, [tuple(x) if isinstance(x, list) else x for x in args[0]])
    if tag == "code_change" and args and isinstance(args[-1], list):
        pairs = [tuple(x) if isinstance(x, list) else x for x in args[-1]]
        return (tag, *args[:-1], pairs)
    if tag == "sync_nodes" and len(args) == 2:
        target = args[1]
        if isinstance(target, list) and len(target) == 3 and isinstance(target[2], list):
            return (tag, args[0], tuple(target))
        return (tag, *args)
    if tag == "update":
        return (tag, *[_change_term(a) for a in args])
    return (tag, *args)


def _from_options(
    where: str, instr: list[Any], tag: str, args: list[Any], t: Mapping[str, Any]
) -> Any:
    if tag == "update" and len(args) == 1:
        _opts(where, instr, t, _UPDATE_OPTS)
        change = t.get("change", "advanced" if "extra" in t else "soft")
        if change == "advanced":
            change_t: Any = ("advanced", t.get("extra", []))
        elif change == "soft":
            if "extra" in t:
                raise AppupError(f"{where}: {instr!r}: 'extra' needs change = \"advanced\"")
            change_t = "soft"
        else:
            raise AppupError(
                f'{where}: {instr!r}: unknown change {change!r}; use "soft" or "advanced"'
            )
        return (
            "update",
            args[0],
            t.get("mod_type", "dynamic"),
            t.get("timeout", "default"),
            change_t,
            t.get("pre_purge", "brutal_purge"),
            t.get("post_purge", "brutal_purge"),
            t.get("dep_mods", []),
        )
    if tag == "load_module" and len(args) == 1:
        _opts(where, instr, t, {"pre_purge", "post_purge", "dep_mods"})
        return (
            "load_module",
            args[0],
            t.get("pre_purge", "brutal_purge"),
            t.get("post_purge", "brutal_purge"),
            t.get("dep_mods", []),
        )
    if tag in ("add_module", "delete_module") and len(args) == 1:
        _opts(where, instr, t, {"dep_mods"})
        return (tag, args[0], t.get("dep_mods", []))
    if tag == "add_application" and len(args) == 1:
        _opts(where, instr, t, {"type"})
        return (tag, args[0], t.get("type", "permanent"))
    raise AppupError(
        f"{where}: {instr!r}: an options table is accepted only by update, load_module, "
        f"add_module, delete_module and add_application"
    )


def from_term(term: Any) -> Any:
    """Convert an OTP-shaped term back to the array form (what relup.toml and --json hold)."""
    if isinstance(term, str):
        return [term]
    tag = term[0]
    if tag in ("load_object_code", "load", "remove", "apply") and len(term) == 2:
        return [tag, *(_plain(x) for x in term[1])]
    if tag == "suspend":
        return [tag, [list(x) if isinstance(x, tuple) else x for x in term[1]]]
    if tag == "code_change":
        return [tag, *term[1:-1], [[m, _plain(e)] for m, e in term[-1]]]
    if tag == "update":
        return [tag, *(_plain(x) for x in term[1:])]
    return [tag, *(_plain(x) for x in term[1:])]


def _plain(x: Any) -> Any:
    """Tuples → lists, recursively (extras and args may hold tuples)."""
    if isinstance(x, tuple):
        return [_plain(e) for e in x]
    if isinstance(x, list):
        return [_plain(e) for e in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x
