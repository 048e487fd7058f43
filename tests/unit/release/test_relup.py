"""The translator against cases.md part A (exact outputs and OTP's error reasons)."""

from __future__ import annotations

from typing import Any

import pytest

from relhandler.errors import TranslationError
from relhandler.release.relup import translate_scripts, translate_terms
from relhandler.terms import from_term, to_term

from .rc_cases import CASES


def _norm(x: Any) -> Any:
    """S strings compare as plain str."""
    if isinstance(x, tuple):
        return tuple(_norm(e) for e in x)
    if isinstance(x, list):
        return [_norm(e) for e in x]
    if isinstance(x, str):
        return str(x)
    return x


@pytest.mark.parametrize(
    ("case_id", "mode", "scripts", "apps", "pre", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_cases_part_a(
    case_id: str, mode: str, scripts: Any, apps: Any, pre: Any, expected: Any
) -> None:
    if isinstance(expected, tuple) and expected[0] == "error":
        with pytest.raises(TranslationError) as ei:
            translate_terms(mode, scripts, apps, pre)  # type: ignore[arg-type]
        assert _norm(ei.value.reason) == _norm(expected[1])
        assert "\n" not in ei.value.message
    else:
        got = translate_terms(mode, scripts, apps, pre)  # type: ignore[arg-type]
        assert _norm(got) == _norm(expected)


def test_array_form_round_trip_and_options_tables() -> None:
    apps = [
        (
            "sample_app",
            "2.0.0",
            ("sample_app.counter", "sample_app.greeter", "sample_app.sup", "sample_app.history"),
        )
    ]
    script = [
        ["load_module", "sample_app.greeter"],
        ["update", "sample_app.counter", {"change": "advanced", "extra": {"default_history": []}}],
        ["update", "sample_app.sup", "supervisor"],
        ["add_module", "sample_app.history"],
        ["apply", "sample_app.migrate", "warm_caches", []],
    ]
    got = translate_scripts("up", [script], apps, [])
    assert got == [
        [
            "load_object_code",
            "sample_app",
            "2.0.0",
            ["sample_app.greeter", "sample_app.counter", "sample_app.sup", "sample_app.history"],
        ],
        ["point_of_no_return"],
        ["load", "sample_app.greeter", "brutal_purge", "brutal_purge"],
        ["suspend", ["sample_app.counter"]],
        ["load", "sample_app.counter", "brutal_purge", "brutal_purge"],
        ["code_change", "up", [["sample_app.counter", {"default_history": []}]]],
        ["resume", ["sample_app.counter"]],
        ["suspend", ["sample_app.sup"]],
        ["load", "sample_app.sup", "brutal_purge", "brutal_purge"],
        ["code_change", "up", [["sample_app.sup", []]]],
        ["resume", ["sample_app.sup"]],
        ["load", "sample_app.history", "brutal_purge", "brutal_purge"],
        ["apply", "sample_app.migrate", "warm_caches", []],
    ]
    for arr in got:
        assert from_term(to_term(arr)) == arr


def test_positional_update_forms_match_options_form() -> None:
    apps = [("a", "1.0", ("m",))]
    positional = [
        ["update", "m", "static", 3000, ["advanced", 7], "soft_purge", "brutal_purge", []]
    ]
    table = [
        [
            "update",
            "m",
            {
                "mod_type": "static",
                "timeout": 3000,
                "change": "advanced",
                "extra": 7,
                "pre_purge": "soft_purge",
            },
        ]
    ]
    assert translate_scripts("down", [positional], apps, []) == translate_scripts(
        "down", [table], apps, []
    )
