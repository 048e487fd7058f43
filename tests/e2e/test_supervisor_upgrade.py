"""A supervisor upgraded the OTP way on a real node (issue 13, "supervisor gains a child").

The project is the `relhandler new` template; version 0.2.0 gives its supervisor a new
child and a new restart intensity. The appup is the one `appup generate` writes, unedited.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from tests.fixtures.mkroot import NodeProc, start_node

pytestmark = pytest.mark.e2e

PROBE = '''
"""Test probe (the same in both versions)."""

from relhandler.runtime import supervisor, sys


async def children():
    return [[c.id, c.pid is not None] for c in await supervisor.which_children("shop_sup")]


async def intensity():
    return (await sys.get_state("shop_sup")).intensity


def sup_pid():
    from relhandler.runtime import whereis

    return str(whereis("shop_sup"))
'''

TICKER = '''
"""New in 0.2.0: a ticker the supervisor starts."""

from relhandler.runtime import gen_server


def start_link():
    return gen_server.start_link(__name__, None, name="shop_ticker")


async def tick():
    return await gen_server.call("shop_ticker", "tick")


def init(args):
    return ("ok", 0)


def handle_call(req, from_, n):
    return ("reply", n + 1, n + 1)


def handle_cast(msg, n):
    return ("noreply", n)
'''

TICKER_SPEC = """,
        {
            "id": "ticker",
            "start": ("shop.ticker", "start_link", []),
            "modules": ["shop.ticker"],
        },
    ]"""


def run(*args: str, cwd: Path) -> Any:
    r = subprocess.run(
        [sys.executable, "-m", "relhandler.cli", *args, "--json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"relhandler {' '.join(args)}: {r.stderr}{r.stdout}"
    return json.loads(r.stdout) if r.stdout.strip() else None


def rpc(root: Path, target: str, *args: Any) -> Any:
    mod, fun = target.split(":")
    with Client(root) as c:
        return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})


def test_supervisor_gains_a_child_and_a_new_intensity_and_loses_them_on_the_way_down(
    tmp_path: Path, nodes: list[NodeProc]
) -> None:
    run("new", "shop", "--dir", str(tmp_path / "shop"), cwd=tmp_path)
    proj = tmp_path / "shop"
    src = proj / "src" / "shop"
    (src / "probe.py").write_text(PROBE)
    run("build", cwd=proj)

    # 0.2.0: a new child and intensity 5 → 7 in the template's own sup.py
    pyproject = proj / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "0.1.0"', 'version = "0.2.0"'))
    sup = (src / "sup.py").read_text()
    assert '"intensity": 5' in sup and "\n    ]" in sup
    sup = sup.replace('"intensity": 5', '"intensity": 7').replace("\n    ]", TICKER_SPEC, 1)
    (src / "sup.py").write_text(sup)
    (src / "ticker.py").write_text(TICKER)
    run("build", cwd=proj)
    run(
        "appup", "generate", "--from", "0.1.0", "--to", "0.2.0", "--app", "shop",
        "--out", str(src / "shop.appup.toml"),
        cwd=proj,
    )  # fmt: skip
    appup = tomllib.loads((src / "shop.appup.toml").read_text())
    assert appup["up"][0]["instructions"] == [
        ["add_module", "shop.ticker"],
        ["update", "shop.sup", "supervisor"],
        ["apply", "supervisor", "restart_child", ["shop_sup", "ticker"]],
    ]
    assert appup["down"][0]["instructions"] == [
        ["apply", "supervisor", "terminate_child", ["shop_sup", "ticker"]],
        ["apply", "supervisor", "delete_child", ["shop_sup", "ticker"]],
        ["update", "shop.sup", "supervisor"],
        ["delete_module", "shop.ticker"],
    ]
    run("build", cwd=proj)
    run("relup", "--to", "0.2.0", "--from", "0.1.0", cwd=proj)
    assert run("check", "--vsn", "0.2.0", "--strict", cwd=proj)["problems"] == []

    rel = proj / "_build" / "rel"
    root = tmp_path / "root"
    run("deploy", str(rel / "shop-0.1.0.tar.gz"), "--root", str(root), cwd=tmp_path)
    nodes.append(start_node(root))
    top = rpc(root, "shop.probe:sup_pid")
    assert rpc(root, "shop.probe:children") == [["server", True]]
    assert rpc(root, "shop.probe:intensity") == 5
    assert rpc(root, "shop.server:hello", "Ada") == "Hello, Ada!"

    run("unpack", str(rel / "shop-0.2.0.tar.gz"), "--root", str(root), cwd=tmp_path)
    run("install", "0.2.0", "--dry-run", "--root", str(root), cwd=tmp_path)  # the preflight
    run("install", "0.2.0", "--root", str(root), cwd=tmp_path)
    assert rpc(root, "shop.probe:children") == [["server", True], ["ticker", True]]
    assert rpc(root, "shop.probe:intensity") == 7
    assert rpc(root, "shop.ticker:tick") == 1
    assert rpc(root, "shop.probe:sup_pid") == top  # upgraded in place, not restarted
    assert rpc(root, "shop.server:count") == 1

    run("install", "0.1.0", "--dry-run", "--root", str(root), cwd=tmp_path)
    run("install", "0.1.0", "--root", str(root), cwd=tmp_path)
    assert rpc(root, "shop.probe:children") == [["server", True]]
    assert rpc(root, "shop.probe:intensity") == 5
    assert rpc(root, "shop.probe:sup_pid") == top
    assert rpc(root, "shop.server:count") == 1

    # and up again: the generated relup is repeatable
    run("install", "0.2.0", "--root", str(root), cwd=tmp_path)
    assert rpc(root, "shop.probe:children") == [["server", True], ["ticker", True]]
    assert rpc(root, "shop.ticker:tick") == 1
