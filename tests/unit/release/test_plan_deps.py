"""Which dependency changes are hot and which restart the node (``check``'s lines)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from relhandler.release.model import BundledDist, ReleaseSpec, dump_release, parse_release
from relhandler.release.plan import DepUpgrade, ReleaseSource, dep_upgrades


def _rel(vsn: str, deps: str | None, *dists: BundledDist, python: str = ">=3.11") -> ReleaseSource:
    spec = ReleaseSpec("r", vsn, python, (), deps, dists)
    return ReleaseSource(Path("/nowhere"), spec, {})


def test_each_changed_dependency_is_hot_or_restart_with_its_reason() -> None:
    old = _rel(
        "1.0",
        "deps-a",
        BundledDist("hotlib", "1.0", hot=True),
        BundledDist("same", "1.0"),
    )
    new = _rel("2.0", "deps-a", BundledDist("hotlib", "2.0", hot=True), BundledDist("same", "1.0"))
    assert dep_upgrades(new, old) == [
        DepUpgrade(
            "hotlib", "1.0", "2.0", True, "pure Python, in hot_deps: loaded through the code server"
        ),
    ]


def test_compiled_unmarked_and_python_changes_restart() -> None:
    old = _rel(
        "1.0",
        "deps-a",
        BundledDist("fast", "1.0", compiled=True),
        BundledDist("h", "1"),
        BundledDist("gone", "1"),
    )
    new = _rel("2.0", "deps-b", BundledDist("fast", "2.0", compiled=True), BundledDist("h", "1"))
    assert [c.line() for c in dep_upgrades(new, old)] == [
        "dependency fast 1.0 → 2.0: restart (it has compiled extensions)",
        "dependency gone 1 → (none): restart (not in hot_deps)",
    ]
    hot_old = _rel("1.0", None, BundledDist("h", "1", hot=True))
    hot_new = _rel("2.0", None, BundledDist("h", "2", hot=True), python=">=3.12")
    assert dep_upgrades(hot_new, hot_old)[0].why == "the Python requirement changed"
    # a hot one changed together with one that restarts: the node restarts anyway
    both_old = _rel("1.0", "deps-a", BundledDist("h", "1", hot=True), BundledDist("u", "1"))
    both_new = _rel("2.0", "deps-b", BundledDist("h", "2", hot=True), BundledDist("u", "2"))
    assert [(c.name, c.hot) for c in dep_upgrades(both_new, both_old)] == [
        ("h", False),
        ("u", False),
    ]


def test_a_release_with_no_dist_record_says_so() -> None:
    old = _rel("1.0", "deps-a")
    old = ReleaseSource(old.root, ReleaseSpec("r", "1.0", ">=3.11", (), "deps-a"), {})
    new = _rel("2.0", "deps-b", BundledDist("u", "2"))
    (change,) = dep_upgrades(new, old)
    assert not change.hot and "release 1.0 does not list its bundled packages" in change.why


def test_dists_round_trip_through_release_toml() -> None:
    spec = ReleaseSpec(
        "r", "1.0", ">=3.11", (), "deps-a", (BundledDist("c", "5.5.2", True, False),)
    )
    assert parse_release(tomllib.loads(dump_release(spec))) == spec
    bare = ReleaseSpec("r", "1.0", ">=3.11", ())
    assert parse_release(tomllib.loads(dump_release(bare))).dists is None
