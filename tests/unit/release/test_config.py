"""[tool.relhandler] errors: exit 2 and one line naming the key and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from relhandler.errors import ConfigError
from relhandler.release.config import read_config
from tests.fixtures.mkroot import cli

GOOD = """
[project]
name = "shop"
version = "1.0.0"

[tool.relhandler.release]
applications = ["shop", "billing"]

[tool.relhandler.apps.shop]
path = "src/shop"
applications = ["billing"]

[tool.relhandler.apps.billing]
path = "src/billing"
"""


def project(tmp_path: Path, text: str) -> Path:
    for pkg in ("shop", "billing"):
        d = tmp_path / "src" / pkg
        d.mkdir(parents=True, exist_ok=True)
        (d / "__init__.py").write_text("")
        (d / "core.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent(text))
    return tmp_path


def test_good_config(tmp_path: Path) -> None:
    cfg = read_config(project(tmp_path, GOOD))
    assert (cfg.name, cfg.version) == ("shop", "1.0.0")
    assert [a.name for a in cfg.apps] == ["shop", "billing"]
    assert cfg.apps[0].modules == ("shop", "shop.core")


CASES = [
    (
        "missing-path",
        GOOD.replace('path = "src/billing"', 'path = "src/nowhere"'),
        r"pyproject\.toml:\d+: tool\.relhandler\.apps\.billing\.path: .*not a package directory",
    ),
    (
        "bad-version",
        GOOD.replace('version = "1.0.0"', 'version = "one"'),
        r"tool\.relhandler\.release\.version: 'one' is not a valid PEP 440 version",
    ),
    (
        "unknown-key",
        GOOD.replace('path = "src/shop"', 'path = "src/shop"\nstrat = "x"'),
        r"pyproject\.toml:\d+: tool\.relhandler\.apps\.shop\.strat: unknown key; allowed",
    ),
    (
        "unknown-release-key",
        GOOD.replace(
            'applications = ["shop", "billing"]', 'applications = ["shop", "billing"]\nfoo = 1'
        ),
        r"tool\.relhandler\.release\.foo: unknown key",
    ),
    (
        "dep-not-in-release",
        GOOD.replace('applications = ["billing"]', 'applications = ["tax"]'),
        r"apps\.shop\.applications: needs 'tax', which is not in the release; add it",
    ),
    (
        "bad-python",
        GOOD.replace("[tool.relhandler.release]", '[tool.relhandler.release]\npython = "three"'),
        r"release\.python: 'three' is not a version specifier",
    ),
    (
        "no-apps",
        GOOD.replace('applications = ["shop", "billing"]', "applications = []"),
        r"release\.applications: must be a non-empty array",
    ),
    (
        "bad-start",
        GOOD.replace('path = "src/shop"', 'path = "src/shop"\nstart = "nocolon"'),
        r"apps\.shop\.start: 'nocolon' must look like",
    ),
    ("toml-syntax", GOOD + "\n[broken\n", r"pyproject\.toml: .*line"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_config_errors(tmp_path: Path, case: str, text: str, pattern: str) -> None:
    project(tmp_path, text)
    with pytest.raises(ConfigError, match=pattern):
        read_config(tmp_path)


def test_duplicate_module_across_apps(tmp_path: Path) -> None:
    text = GOOD.replace('path = "src/billing"', 'path = "src/billing/shop"')
    project(tmp_path, text)
    d = tmp_path / "src" / "billing" / "shop"
    d.mkdir(parents=True)
    (d / "__init__.py").write_text("")
    with pytest.raises(ConfigError, match=r"module 'shop' is also in application 'shop'"):
        read_config(tmp_path)


def test_cli_exit_code_2_and_one_line(tmp_path: Path) -> None:
    project(tmp_path, GOOD.replace('version = "1.0.0"', 'version = "one"'))
    r = cli("build", "--project", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert "version" in r.stderr
    assert "PEP 440" in r.stderr


VERIFY = (
    GOOD
    + """
[tool.relhandler.verify]
calls = [["counter", "incr"], ["counter", ["add", 2]]]
load = "shop.core:drive"
health = ["shop.core:ok"]
roundtrip_exempt = ["shop.cache"]
"""
)


def test_verify_table(tmp_path: Path) -> None:
    v = read_config(project(tmp_path, VERIFY)).verify
    assert v is not None
    assert v.calls == (("counter", "incr"), ("counter", ["add", 2]))
    assert (v.load, v.health, v.roundtrip_exempt) == (
        "shop.core:drive",
        ("shop.core:ok",),
        ("shop.cache",),
    )
    assert (v.max_crashes, v.crash_period, v.health_interval) == (None, None, None)


def test_verify_confirm_window_keys(tmp_path: Path) -> None:
    text = VERIFY + "max_crashes = 0\ncrash_period = 30\nhealth_interval = 0.5\n"
    v = read_config(project(tmp_path, text)).verify
    assert v is not None
    assert (v.max_crashes, v.crash_period, v.health_interval) == (0, 30.0, 0.5)
    assert v.to_toml()["max_crashes"] == 0 and v.to_toml()["health_interval"] == 0.5


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        (
            'calls = ["counter"]',
            r"tool\.relhandler\.verify\.calls: 'counter': each call is \[process_name, request\]",
        ),
        ('load = "nocolon"', r"tool\.relhandler\.verify\.load: 'nocolon' must look like"),
        ("health = [1]", r"tool\.relhandler\.verify\.health: must be an array"),
        ("speed = 3", r"tool\.relhandler\.verify\.speed: unknown key"),
        ("max_crashes = -1", r"verify\.max_crashes: -1 must be a whole number >= 0"),
        ("max_crashes = true", r"verify\.max_crashes: True must be a whole number"),
        ("crash_period = 0", r"verify\.crash_period: 0 must be a number of seconds > 0"),
        ('health_interval = "1s"', r"verify\.health_interval: '1s' must be a number of"),
    ],
)
def test_verify_table_errors(tmp_path: Path, bad: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg):
        read_config(project(tmp_path, GOOD + "\n[tool.relhandler.verify]\n" + bad + "\n"))
