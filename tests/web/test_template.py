"""`relhandler new --template web`: a Starlette project that builds, deploys and serves."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_new_web_template_rejects_unknown_template(tmp_path: Path) -> None:
    r = cli("new", "x", "--template", "nope", "--dir", str(tmp_path / "x"))
    assert r.returncode == 2
    assert "unknown template 'nope'" in r.stderr
    assert not (tmp_path / "x").exists()


async def test_new_web_template_builds_and_serves(tmp_path: Path, nodes: list[NodeProc]) -> None:
    proj = tmp_path / "shop"
    cli("new", "shop", "--template", "web", "--dir", str(proj), check=True)
    py = proj / "pyproject.toml"
    py.write_text(py.read_text().replace("port = 8000", "port = 0"))  # tests run in parallel
    res = json.loads(cli("build", "--project", str(proj), "--json", check=True, timeout=300).stdout)
    root = tmp_path / "root"
    cli("deploy", res["tarball"], "--root", str(root), check=True)
    nodes.append(start_node(root))
    port = json.loads(cli("rpc", "shop.app:port", "[]", "--root", str(root)).stdout)
    for n in (1, 2):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert json.loads(r.read()) == {"hello": "world", "visits": n, "version": "1"}
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send("hi")
        assert await ws.recv() == "#1: hi"
        # a new version of web.py loaded, the old one purged (what make-permanent or the
        # next upgrade does, brutally by default): the open websocket's loop is not in
        # web.py's old code, so it is not killed, and its counter goes on
        for args in (("reload", "shop.web"), ("purge", "shop.web")):
            assert cli(*args, "--root", str(root)).returncode == 0
        await ws.send("again")
        assert await ws.recv() == "#2: again"
