"""Appup reading: OTP's version matching, and one clear error per bad instruction."""

from __future__ import annotations

from typing import Any

import pytest

from relhandler.errors import AppupError
from relhandler.release.appup import AppupEntry, parse_appup, select

# cases.md part B (appup_search_for_version), with regexes as from_pattern
B = [
    ("2.1", [("2\\.1", True)], 0),
    ("2.1.1", [("2\\.1", True)], None),
    ("12.1", [("2\\.1", True)], None),
    ("1.10", [("1\\.[0-9]", True)], None),
    ("1.10", [("1\\.[0-9]+", True)], 0),
    ("1.10", [("1\\.1|1\\.10", True)], None),
    ("1.10", [("1\\.10|1\\.1", True)], 0),
    ("1.1", [("1.1", False), ("1\\..*", True)], 0),
    ("1.1", [("1\\..*", True), ("1.1", False)], 0),
    ("1x1", [("1.1", True)], 0),
    ("2.0", [("2.0.0", False)], None),
    ("2.1.1", [("2\\.[0-9]+", True), ("2(\\.[0-9]+)+", True)], 1),
]


@pytest.mark.parametrize(("vsn", "keys", "want"), B, ids=[f"B{i}" for i in range(len(B))])
def test_version_matching(vsn: str, keys: list[tuple[str, bool]], want: int | None) -> None:
    entries = [AppupEntry(k, pat, ()) for k, pat in keys]
    got = select(entries, vsn)
    assert (None if got is None else entries.index(got)) == want


def doc(*instrs: Any, **entry: Any) -> dict[str, Any]:
    return {"version": "2.0.0", "up": [{"from": "1.0.0", "instructions": list(instrs), **entry}]}


BAD = [
    ("arity", doc(["load_module"]), "instructions[0]"),
    ("unknown-instr", doc(["frobnicate", "m"]), "unknown instruction or wrong arity"),
    ("bad-change", doc(["update", "m", "advnced"]), "unknown instruction or wrong arity"),
    ("bad-change-opt", doc(["update", "m", {"change": "advnced"}]), "unknown change"),
    ("unknown-option", doc(["update", "m", {"chnage": "soft"}]), "unknown option 'chnage'"),
    ("bad-purge", doc(["load_module", "m", "rutal", "brutal_purge", []]), "purge must be"),
    ("bad-timeout", doc(["update", "m", {"timeout": 0}]), "timeout must be"),
    ("bad-mod-type", doc(["update", "m", {"mod_type": "frozen"}]), "mod_type must be"),
    ("module-not-string", doc(["load_module", 3]), "a module name must be a string"),
    ("deps-not-list", doc(["update", "m", {"dep_mods": "x"}]), "expected an array"),
    ("bad-start-type", doc(["add_application", "a", {"type": "forever"}]), "start type"),
    (
        "bad-regex",
        {"version": "2", "up": [{"from_pattern": "1.(", "instructions": []}]},
        "not a valid regex",
    ),
    (
        "both-keys",
        {"version": "2", "up": [{"from": "1", "from_pattern": "1", "instructions": []}]},
        "exactly one of from",
    ),
    ("twice", doc(["load_module", "m"], ["update", "m"]), "module 'm' already has instruction"),
    ("not-an-array", doc("load_module m"), "unknown instruction"),
    ("no-version", {"up": []}, "missing version"),
    ("unknown-key", {"version": "2", "upp": []}, "unknown key 'upp'"),
]


@pytest.mark.parametrize(("case", "data", "msg"), BAD, ids=[c[0] for c in BAD])
def test_bad_appups(case: str, data: dict[str, Any], msg: str) -> None:
    with pytest.raises(AppupError) as ei:
        parse_appup(data, "a.appup.toml")
    assert msg in ei.value.message
    assert "\n" not in ei.value.message
    assert ei.value.exit_code == 2


def test_all_problems_reported_together() -> None:
    with pytest.raises(AppupError) as ei:
        parse_appup(doc(["frobnicate", "m"], ["update", "n", {"timeout": -1}]), "a.appup.toml")
    assert ei.value.message.startswith("2 problems")
    assert len(ei.value.details["problems"]) == 2


def test_good_appup_all_forms() -> None:
    a = parse_appup(
        doc(
            ["load_module", "a"],
            ["load_module", "b", "soft_purge", "brutal_purge", []],
            ["update", "c"],
            ["update", "d", "supervisor"],
            ["update", "e", ["advanced", 1]],
            ["update", "f", 5000, "soft", "brutal_purge", "brutal_purge", []],
            ["update", "g", {"change": "advanced", "extra": {"k": 1}, "timeout": "infinity"}],
            ["add_module", "h"],
            ["delete_module", "i", {"dep_mods": ["h"]}],
            ["apply", "m", "f", [1]],
            ["add_application", "x"],
            ["remove_application", "y"],
            ["restart_application", "z"],
            ["restart_emulator"],
            "restart_new_emulator",
        ),
        "a.appup.toml",
    )
    assert len(a.up[0].instructions) == 15
