"""Bundled dependencies at build time, through the real CLI (issue 16, build item 5): the
import check, offline builds from a wheel cache, the unreachable index, the opt-out.

No network: wheels are made by hand, and the package index is a closed local port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from relhandler.errors import ConfigError
from relhandler.release.build import build
from relhandler.release.model import BundledDist, ReleaseApp, parse_release, read_app
from tests.fixtures.wheels import make_wheel

pytestmark = pytest.mark.e2e

USES_DEP = "import json\n\nimport rh_testdep\n\n\ndef version():\n    return rh_testdep.VERSION\n"


def _env(**extra: str) -> dict[str, str]:
    """Our environment with no pip configuration and an index nobody answers on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.update(extra)
    return env


def rh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=300,
    )


@pytest.fixture(scope="module")
def scaffold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    proj = tmp_path_factory.mktemp("scaffold") / "dep"
    r = rh("new", "dep", "--dir", str(proj))
    assert r.returncode == 0, r.stderr
    return proj


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process builds: pip (a subprocess) sees the closed index too."""
    for k in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(k)
    for k, v in _env().items():
        if k.startswith("PIP_"):
            monkeypatch.setenv(k, v)


def _project(
    tmp: Path,
    scaffold: Path,
    deps: str = '"rh_testdep==1.0"',
    extra: str = "include_deps = true",
) -> Path:
    proj = tmp / "dep"
    shutil.copytree(scaffold, proj)
    py = proj / "pyproject.toml"
    py.write_text(
        py.read_text()
        .replace("dependencies = []", f"dependencies = [{deps}]")
        .replace('config = "config/sys.toml"', f'config = "config/sys.toml"\n{extra}')
    )
    (proj / "src/dep/uses_dep.py").write_text(USES_DEP)
    return proj


def test_an_import_nothing_provides_fails_the_build_naming_module_and_file(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    proj = _project(tmp_path, scaffold, deps="")
    r = rh("build", "--project", str(proj))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "src/dep/uses_dep.py:3: imports 'rh_testdep'" in r.stderr
    assert "[project].dependencies" in r.stderr and "optional_imports" in r.stderr
    assert not (proj / "_build" / "rel" / "dep-0.1.0.tar.gz").exists()
    # the error carries each missing import as data (--json prints it)
    with pytest.raises(ConfigError) as e:
        build(proj)
    assert e.value.code == "missing_import"
    assert e.value.details["missing"] == [
        {"module": "rh_testdep", "file": str(proj / "src/dep/uses_dep.py"), "line": 3}
    ]


def test_optional_imports_do_not_fail_the_build(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    proj = _project(tmp_path, scaffold, deps="", extra='optional_imports = ["rh_testdep"]')
    (proj / "src/dep/opt.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "try:\n    import rh_fast\nexcept ImportError:\n    rh_fast = None\n"
        "if TYPE_CHECKING:\n    from rh_types import T\n"
        "from . import uses_dep\nfrom .uses_dep import version\n"
    )
    build(proj)


def test_an_offline_build_from_the_wheel_cache_is_byte_identical(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    dist = tmp_path / "dist"
    make_wheel(dist, "rh_testdep", "1.0", {"rh_testdep/__init__.py": "VERSION = '1.0'\n"})
    proj = _project(tmp_path, scaffold)
    r = rh("build", "--project", str(proj), "--json", "--find-links", str(dist))
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert first["deps"].startswith("deps-")
    cache = proj / "_build" / "wheels"
    assert (cache / "rh_testdep-1.0-py3-none-any.whl").is_file()
    # the wheels' source is gone and the index unreachable: the cache's lock is reused
    (dist / "rh_testdep-1.0-py3-none-any.whl").unlink()
    again = build(proj, tmp_path / "b")
    # and with the lock gone, --find-links to the cache resolves from it alone
    (cache / "lock.json").unlink()
    third = build(proj, tmp_path / "c", find_links=[cache])
    data = Path(first["tarball"]).read_bytes()
    assert again.tarball.read_bytes() == data
    assert third.tarball.read_bytes() == data


def test_two_checkouts_bundle_the_same_deps(tmp_path: Path, scaffold: Path, offline: None) -> None:
    """v1 and v2 built from two directories, each with its own wheel cache, bundle one
    deps directory: a different one makes every upgrade between them a restart (pip's
    RECORD kept the hash of the removed direct_url.json, which names the wheel's path)."""
    dist = tmp_path / "dist"
    make_wheel(dist, "rh_testdep", "1.0", {"rh_testdep/__init__.py": "VERSION = '1.0'\n"})
    a = build(_project(tmp_path / "a", scaffold), tmp_path / "out-a", find_links=[dist])
    b = build(_project(tmp_path / "b", scaffold), tmp_path / "out-b", find_links=[dist])
    assert a.deps is not None and a.deps == b.deps


def test_an_unreachable_index_says_how_to_build_offline(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    proj = _project(tmp_path, scaffold)
    r = rh("build", "--project", str(proj))
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert "cannot be reached" in r.stderr and "--find-links DIR" in r.stderr


def test_opting_out_bundles_nothing_and_asks_no_index(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    proj = _project(tmp_path, scaffold, extra="include_deps = false")
    (proj / "src/dep/uses_dep.py").write_text("import rich\n")  # the build's Python has it
    res = build(proj)
    assert res.deps is None
    assert not list((res.release_root / "lib").glob("deps-*"))


def test_hot_deps_pure_ones_get_their_lib_dir_compiled_ones_stay_shared(
    tmp_path: Path, scaffold: Path, offline: None
) -> None:
    dist = tmp_path / "dist"
    make_wheel(dist, "rh_testdep", "1.0", {"rh_testdep/__init__.py": "VERSION = '1.0'\n"})
    so = "rh_fast/_speed.cpython-311-x86_64-linux-gnu.so"
    make_wheel(dist, "rh_fast", "2.0", {"rh_fast/__init__.py": "", so: "not really ELF"})
    proj = _project(
        tmp_path,
        scaffold,
        deps='"rh_testdep==1.0", "rh-fast==2.0"',
        extra=f'hot_deps = ["rh_testdep", "rh-fast"]\nfind_links = ["{dist}"]',
    )
    res = build(proj)
    rel = parse_release(
        tomllib.loads((res.release_root / "releases/0.1.0/release.toml").read_text())
    )
    assert rel.dists == (
        BundledDist("rh_fast", "2.0", hot=False, compiled=True),
        BundledDist("rh_testdep", "1.0", hot=True, compiled=False),
    )
    assert rel.apps[0] == ReleaseApp("rh_testdep", "1.0", "load")
    lib = res.release_root / "lib"
    assert (lib / "rh_testdep-1.0/rh_testdep/__init__.py").is_file()
    assert read_app(lib / "rh_testdep-1.0/app.toml").modules == ("rh_testdep",)
    assert (lib / str(res.deps) / so).is_file()
    assert not (lib / str(res.deps) / "rh_testdep").exists()
    # a name nothing bundles is an error naming the key and what is bundled
    py = proj / "pyproject.toml"
    py.write_text(py.read_text().replace('"rh-fast"]', '"rh_nothing"]'))
    with pytest.raises(ConfigError, match=r"hot_deps: 'rh_nothing' is not a bundled distribution"):
        build(proj)
