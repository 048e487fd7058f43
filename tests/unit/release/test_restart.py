"""What a restart-type upgrade says before it happens (issue 16.3): why, and what runs."""

from __future__ import annotations

from pathlib import Path

from relhandler.release.model import AppSpec, ReleaseApp, ReleaseSpec
from relhandler.release.restart import (
    DepChange,
    describe_static,
    dist_versions,
    restart_report,
    restarts,
    static_processes,
)


def _deps(lib: Path, name: str, dists: dict[str, str]) -> None:
    for n, v in dists.items():
        info = lib / name / f"{n}-{v}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {n}\nVersion: {v}\n")


def _rel(vsn: str, deps: str | None, python: str = ">=3.11") -> ReleaseSpec:
    return ReleaseSpec("r", vsn, python, (ReleaseApp("shop", "1.0"),), deps)


def test_restart_instructions_are_recognised_in_any_shape() -> None:
    assert restarts([["restart_new_emulator"], ["load", "m"]])
    assert restarts(["point_of_no_return", ("restart_emulator",)])
    assert not restarts([["load_module", "m"], "point_of_no_return"])


def test_the_report_names_each_changed_distribution_and_the_python_requirement(
    tmp_path: Path,
) -> None:
    _deps(tmp_path, "deps-a", {"cachetools": "5.5.2", "attrs": "23.1", "gone": "1"})
    _deps(tmp_path, "deps-b", {"cachetools": "6.2.0", "attrs": "23.1", "fresh": "0.3"})
    assert dist_versions(tmp_path / "deps-a") == {
        "attrs": "23.1",
        "cachetools": "5.5.2",
        "gone": "1",
    }
    rep = restart_report(
        _rel("1", "deps-a"),
        tmp_path,
        _rel("2", "deps-b", ">=3.12"),
        tmp_path,
        [["restart_new_emulator"]],
    )
    assert rep is not None
    assert rep.deps == (
        DepChange("cachetools", "5.5.2", "6.2.0"),
        DepChange("fresh", None, "0.3"),
        DepChange("gone", "1", None),
    )
    assert rep.reasons() == [
        "bundled dependency cachetools 5.5.2 → 6.2.0",
        "bundled dependency fresh 0.3 added",
        "bundled dependency gone 1 removed",
        "Python requirement >=3.11 → >=3.12",
    ]
    assert rep.to_wire()["dependencies"][0] == {
        "name": "cachetools",
        "from": "5.5.2",
        "to": "6.2.0",
    }


def test_no_restart_no_report_and_an_unexplained_restart_says_the_relup(tmp_path: Path) -> None:
    old, new = _rel("1", None), _rel("2", None)
    assert restart_report(old, tmp_path, new, tmp_path, [["load_module", "m"]]) is None
    rep = restart_report(old, tmp_path, new, tmp_path, ["restart_emulator"])
    assert rep is not None and rep.reasons() == ["the relup says restart_emulator"]


def test_static_processes_are_the_apps_supervisors_and_their_children(tmp_path: Path) -> None:
    lib = tmp_path / "shop-1.0"
    (lib / "shop").mkdir(parents=True)
    (lib / "shop" / "__init__.py").write_text("")
    (lib / "shop" / "app.py").write_text(
        "from relhandler.runtime import supervisor\n"
        "async def start():\n"
        "    return await supervisor.start_link('shop.sup', None, name='shop_sup')\n"
    )
    (lib / "shop" / "sup.py").write_text(
        "def init(args):\n"
        "    flags = {'strategy': 'one_for_one'}\n"
        "    return ('ok', (flags, [{'id': 'cache', 'start': ('shop.cache', 'start_link', [])},\n"
        "                           {'id': 'web', 'start': ('shop.web', 'start_link', [])}]))\n"
    )
    spec = AppSpec("shop", "1.0", ("shop", "shop.app", "shop.sup"), (), "shop.app:start", {})
    procs = static_processes(_rel("1", None), tmp_path, {"shop": spec})
    assert procs == [
        {
            "application": "shop",
            "supervisors": [
                {"name": "shop_sup", "module": "shop.sup", "children": ["cache", "web"]}
            ],
        }
    ]
    assert describe_static(procs) == (
        "application shop: supervisor shop_sup (shop.sup) with children cache, web"
    )
