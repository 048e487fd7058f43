"""app.toml / release.toml / sys.toml: round trips and exact errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from relhandler.errors import ConfigError
from relhandler.release import model

APP = {
    "name": "sample_app",
    "version": "2.0.0",
    "modules": ["sample_app", "sample_app.counter"],
    "applications": ["base"],
    "start": "sample_app.app:start",
    "env": {"port": 7070},
    "description": "demo",
}
REL = {
    "name": "sample",
    "version": "2.0.0",
    "python": ">=3.11",
    "deps": "deps-0123456789abcdef",
    "apps": [{"name": "sample_app", "version": "2.0.0", "type": "permanent"}],
}


def test_app_round_trip() -> None:
    app = model.parse_app(APP)
    assert app.dir_name == "sample_app-2.0.0"
    assert model.parse_app(tomllib.loads(model.dump_app(app))) == app


def test_release_round_trip() -> None:
    rel = model.parse_release(REL)
    assert rel.app("sample_app") == model.ReleaseApp("sample_app", "2.0.0", "permanent")
    assert rel.app("nope") is None
    assert model.parse_release(tomllib.loads(model.dump_release(rel))) == rel


def test_sys_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "sys.toml"
    p.write_text(model.dump_sys({"sample_app": {"port": 1}}))
    assert model.read_sys(p) == {"sample_app": {"port": 1}}
    assert model.read_sys(tmp_path / "missing.toml") == {}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param({**APP, "modulez": []}, "unknown key 'modulez'", id="unknown-key"),
        pytest.param(
            {k: v for k, v in APP.items() if k != "modules"},
            "missing key 'modules'",
            id="missing-key",
        ),
        pytest.param(
            {**APP, "version": "two"}, "'two' is not a valid PEP 440 version", id="bad-version"
        ),
        pytest.param(
            {**APP, "modules": "a"}, "'modules' must be an array of strings", id="modules-not-list"
        ),
        pytest.param({**APP, "env": 3}, "'env' must be a table", id="env-not-table"),
    ],
)
def test_bad_app(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model.parse_app(data, "lib/a-1/app.toml")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            {**REL, "apps": [{"name": "a", "version": "1", "type": "forever"}]},
            "type 'forever' is not one of",
            id="bad-start-type",
        ),
        pytest.param(
            {**REL, "apps": [{"name": "a", "version": "1"}] * 2},
            "application 'a' is listed twice",
            id="duplicate-app",
        ),
        pytest.param({**REL, "apps": {"a": 1}}, "'apps' must be an array", id="apps-not-array"),
        pytest.param(
            {**REL, "apps": [{"name": "a", "version": "1", "x": 1}]},
            r"apps\[0\]: unknown key 'x'",
            id="unknown-app-key",
        ),
    ],
)
def test_bad_release(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model.parse_release(data)


def test_unreadable_toml_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "release.toml"
    p.write_text('name = "x"\nversion = \n')
    with pytest.raises(ConfigError, match=r"release\.toml: .*line 2"):
        model.read_release(p)
