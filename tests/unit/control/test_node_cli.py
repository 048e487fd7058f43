"""Node commands' argument handling, help and exit codes (cli.md), without a node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import relhandler.cli.node_cmds  # noqa: F401  # registers the node commands on the app
from relhandler.cli._app import app

NODE_COMMANDS = ["start", "stop", "ping", "status", "reload", "purge", "which", "rpc"]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("cmd", NODE_COMMANDS)
def test_help_has_root_json_and_an_example(runner: CliRunner, cmd: str) -> None:
    r = runner.invoke(app, [cmd, "--help"], terminal_width=200)
    assert r.exit_code == 0
    assert "Example: relhandler " + cmd in r.output
    assert "--root" in r.output and "--json" in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["rpc", "nocolon"], "must be MODULE:FUNCTION", id="rpc-no-colon"),
        pytest.param(["rpc", "m:"], "must be MODULE:FUNCTION", id="rpc-no-function"),
        pytest.param(["rpc", "m:f", "[1,"], "ARGS_JSON is not valid JSON", id="rpc-bad-json"),
        pytest.param(["rpc", "m:f", '{"a": 1}'], "must be a JSON array", id="rpc-object"),
        pytest.param(
            ["reload", "m", "--from", "x.py", "--revert"], "either --from FILE or", id="reload"
        ),
    ],
)
def test_bad_usage_exits_2_before_touching_a_node(
    runner: CliRunner, tmp_path: Path, args: list[str], message: str
) -> None:
    r = runner.invoke(app, [*args, "--root", str(tmp_path), "--json"])
    assert r.exit_code == 2
    assert message in json.loads(r.stdout)["error"]["message"]


@pytest.mark.parametrize(
    "args",
    [["ping"], ["status"], ["stop"], ["which", "m"], ["purge", "m"], ["rpc", "m:f"]],
    ids=lambda a: a[0],
)
def test_no_node_exits_3_with_one_json_error(
    runner: CliRunner, tmp_path: Path, args: list[str]
) -> None:
    r = runner.invoke(app, [*args, "--root", str(tmp_path), "--json"])
    assert r.exit_code == 3
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "unreachable" and "no node is running" in err["message"]


def test_root_defaults_to_the_environment(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELHANDLER_ROOT", str(tmp_path / "from-env"))
    r = runner.invoke(app, ["ping", "--json"])
    assert r.exit_code == 3
    assert str(tmp_path / "from-env") in json.loads(r.stdout)["error"]["message"]
