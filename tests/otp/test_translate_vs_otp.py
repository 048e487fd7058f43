"""Differential test: our translator against OTP's own ``systools_rc:translate_scripts/4``.

Cases: the whole cases.md part A table, plus a few hundred random scripts from hypothesis,
all evaluated by one ``erl`` run. Outputs are compared instruction by instruction; errors by
outcome and reason. Where dependency order leaves a tie, OTP's order comes from hash-table
order, so those outputs are checked for validity instead (same instruction multiset, and a
valid dependency order).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relhandler.errors import TranslationError
from relhandler.release.relup import translate_terms
from tests.otp.otp_rc import run_otp
from tests.unit.release.rc_cases import APPS, CASES, TIES

pytestmark = pytest.mark.otp

MODS = ["foo", "bar", "baz", "x", "y", "z"]


def ours(mode: str, scripts: Any, apps: Any, pre: Any) -> Any:
    try:
        return ("ok", translate_terms(mode, scripts, apps, pre))  # type: ignore[arg-type]
    except TranslationError as e:
        return ("error", e.reason)


def norm(x: Any) -> Any:
    if isinstance(x, tuple):
        return tuple(norm(e) for e in x)
    if isinstance(x, list):
        return [norm(e) for e in x]
    if isinstance(x, str):
        return str(x)
    return x


def _tag(reason: Any) -> Any:
    return reason[0] if isinstance(reason, tuple) else reason


def _multiset(script: list[Any]) -> list[str]:
    out = []
    for i in script:
        if isinstance(i, tuple) and i[0] in ("suspend", "resume", "load_object_code"):
            inner = i[1][2] if i[0] == "load_object_code" else i[1]
            out.append(repr((i[0], sorted(map(repr, inner)))))
        elif isinstance(i, tuple) and i[0] == "code_change":
            out.append(repr((i[0], i[1], sorted(map(repr, i[2])))))
        else:
            out.append(repr(i))
    return sorted(out)


def compare(cid: str, mine: Any, otp: Any, *, has_tie: bool) -> None:
    mine, otp = norm(mine), norm(otp)
    assert otp[0] in ("ok", "error"), f"{cid}: OTP crashed: {otp}"
    assert mine[0] == otp[0], f"{cid}: outcome differs\n ours: {mine}\n OTP:  {otp}"
    if mine[0] == "error":
        assert _tag(mine[1]) == _tag(otp[1]), f"{cid}: reason differs\n ours: {mine}\n OTP: {otp}"
        if not has_tie:
            assert mine[1] == otp[1], f"{cid}: reason differs\n ours: {mine}\n OTP: {otp}"
        return
    if has_tie:
        assert _multiset(mine[1]) == _multiset(otp[1]), (
            f"{cid}: instruction sets differ\n ours: {mine[1]}\n OTP:  {otp[1]}"
        )
    else:
        assert mine[1] == otp[1], f"{cid}: outputs differ\n ours: {mine[1]}\n OTP:  {otp[1]}"


# A18's order between unrelated cycles depends on the atom table's hashes: this machine's
# OTP answers differently from the one cases.md was recorded on
TIE_CASES = {"A18", *TIES}


def test_cases_part_a_against_otp(erl: str) -> None:
    cases = [(c[0], c[1], c[2], c[3], c[4]) for c in CASES]
    cases += [(k, m, s, APPS, []) for k, (m, s) in TIES.items()]
    otp = run_otp(cases, erl)
    for cid, mode, scripts, apps, pre in cases:
        mine = ours(mode, scripts, apps, pre)
        compare(cid, mine, otp[cid], has_tie=cid in TIE_CASES)
        if cid in TIE_CASES and mine[0] == "ok":
            assert _valid_order(mine[1], scripts, mode), f"{cid}: invalid order {mine[1]}"


# -- random scripts ----------------------------------------------------------------------

purge = st.sampled_from(["soft_purge", "brutal_purge"])
extra = st.one_of(
    st.sampled_from(["e", "extra", []]),
    st.integers(0, 9),
    st.tuples(st.sampled_from(["k"]), st.integers(0, 9)),
)
change = st.one_of(st.just("soft"), extra.map(lambda e: ("advanced", e)))
timeout = st.sampled_from(["default", "infinity", 1000, 5000])


def dep_mods(mod: str) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(MODS), max_size=3, unique=True)


@st.composite
def instruction(draw: st.DrawFn, mod: str) -> Any:
    kind = draw(
        st.sampled_from(
            ["update", "update", "load_module", "add_module", "delete_module", "apply", "bad"]
        )
    )
    deps = draw(dep_mods(mod))
    if kind == "update":
        form = draw(st.integers(0, 5))
        if form == 0:
            return ("update", mod)
        if form == 1:
            return ("update", mod, draw(change))
        if form == 2:
            return ("update", mod, "supervisor")
        if form == 3:
            return ("update", mod, draw(change), draw(purge), draw(purge), deps)
        if form == 4:
            return ("update", mod, draw(timeout), draw(change), draw(purge), draw(purge), deps)
        return (
            "update",
            mod,
            draw(st.sampled_from(["static", "dynamic"])),
            draw(timeout),
            draw(change),
            draw(purge),
            draw(purge),
            deps,
        )
    if kind == "load_module":
        return draw(
            st.sampled_from(
                [
                    ("load_module", mod),
                    ("load_module", mod, deps),
                    ("load_module", mod, draw(purge), draw(purge), deps),
                ]
            )
        )
    if kind == "add_module":
        return draw(st.sampled_from([("add_module", mod), ("add_module", mod, deps)]))
    if kind == "delete_module":
        return draw(st.sampled_from([("delete_module", mod), ("delete_module", mod, deps)]))
    if kind == "apply":
        return ("apply", ("m", "f", [draw(st.integers(0, 9))]))
    return draw(
        st.sampled_from(
            [
                ("update", mod, "frozen"),
                ("update", mod, 0, "soft", "brutal_purge", "brutal_purge", []),
                ("frob", mod),
            ]
        )
    )


@st.composite
def script(draw: st.DrawFn) -> list[Any]:
    mods = draw(st.lists(st.sampled_from([*MODS, "nope"]), min_size=0, max_size=5))
    out = [draw(instruction(m)) for m in mods]
    if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
        out.insert(
            draw(st.integers(0, len(out))),
            draw(
                st.sampled_from(["restart_emulator", "restart_new_emulator", "point_of_no_return"])
            ),
        )
    return out


def test_random_scripts_against_otp(erl: str) -> None:
    rng_cases: list[Any] = []

    @settings(
        max_examples=300, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(script(), min_size=1, max_size=2), st.sampled_from(["up", "dn"]))
    def collect(scripts: list[list[Any]], mode: str) -> None:
        rng_cases.append((f"R{len(rng_cases)}", mode, scripts, APPS, []))

    collect()
    otp = run_otp(rng_cases, erl)
    exact = 0
    for cid, mode, scripts, apps, pre in rng_cases:
        mine = norm(ours(mode, scripts, apps, pre))
        theirs = norm(otp[cid])
        if mine == theirs:
            exact += 1
            continue
        # only a tie in dependency order may differ: same outcome, same instructions
        compare(cid, mine, theirs, has_tie=True)
        assert _valid_order(mine[1], scripts, mode) if mine[0] == "ok" else True
    # most random scripts have a unique order; a drop here means a real divergence
    assert exact >= len(rng_cases) * 0.8, f"only {exact}/{len(rng_cases)} identical"
    print(f"{exact}/{len(rng_cases)} random scripts identical to OTP; the rest differ only in ties")


def _valid_order(out: list[Any], scripts: list[list[Any]], mode: str) -> bool:
    """Every load of a module comes after (up) / before (dn) the loads of its dep_mods,
    unless they are in a cycle."""
    loads = [i[1][0] for i in out if isinstance(i, tuple) and i[0] in ("load", "remove")]
    pos = {m: k for k, m in enumerate(loads)}
    deps: dict[str, list[str]] = {}
    for s in scripts:
        for i in s:
            if (
                isinstance(i, tuple)
                and len(i) > 2
                and isinstance(i[-1], list)
                and i[0] in ("update", "load_module", "add_module", "delete_module")
            ):
                deps[i[1]] = i[-1]

    def reaches(a: str, b: str) -> bool:
        seen, stack = set(), [a]
        while stack:
            x = stack.pop()
            if x == b:
                return True
            if x not in seen:
                seen.add(x)
                stack.extend(deps.get(x, []))
        return False

    for m, ds in deps.items():
        for d in ds:
            # an acyclic edge m→d: up loads d first, dn loads m first
            acyclic = m in pos and d in pos and m != d and not reaches(d, m)
            if acyclic and (mode == "up") != (pos[d] < pos[m]):
                return False
    return True
