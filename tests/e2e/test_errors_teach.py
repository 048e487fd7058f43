"""Errors that teach, and the forgotten ``code_change``, on a project made by ``relhandler
new`` and a real node: each error names the user's file under ``src/``, the cause and the
command that fixes it, and exits by the README's table (0 done, 1 failed, 2 bad input).

One story, one node (module scope), steps in order: the node keeps its data throughout.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mkroot import NodeProc, start_node

pytestmark = pytest.mark.e2e

# 0.2.0 remembers names; its State says so, but its code_change is the template's, which
# knows nothing of 'names': the forgotten code_change
SERVER_V2 = '''"""0.2.0: remembers the names it greeted (code_change forgotten)."""

from typing import TypedDict

from relhandler.runtime import gen_server


class State(TypedDict):
    count: int
    names: list[str]


def start_link():
    return gen_server.start_link(__name__, None, name="shop_server")


async def hello(name):
    return await gen_server.call("shop_server", ("hello", name))


async def count():
    return await gen_server.call("shop_server", "count")


def init(args) -> tuple[str, State]:
    return ("ok", {"count": 0, "names": []})


def handle_call(request, from_, state):
    if request == "count":
        return ("reply", state["count"], state)
    if request[0] == "hello":
        state = {"count": state["count"] + 1, "names": state["names"] + [request[1]]}
        return ("reply", f"Hello again, {request[1]}!", state)
    return ("reply", ("error", "unknown_request"), state)


def handle_cast(msg, state):
    return ("noreply", state)


def code_change(old_vsn, state, extra):
    """Migrate a running process's state to this version's State (an upgrade from
    ``old_vsn``), or back to the older version's shape (a downgrade: ``("down", vsn)``)."""
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        return ("ok", {"count": state["count"]})  # only the keys the older version knows
    return ("ok", {"count": 0, **state})  # a default for each key the old state lacks
'''

APPUP = """version = "{vsn}"

[[up]]
from = "{frm}"
instructions = [["update", "shop.server", {{ change = "advanced" }}]]

[[down]]
to = "{frm}"
instructions = [["update", "shop.server", {{ change = "advanced" }}]]
"""


@dataclass
class Shop:
    project: Path
    root: Path
    node: NodeProc

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "relhandler.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd or self.project,
            env=_env(self.root),
        )

    def ok(self, *args: str) -> Any:
        r = self.run(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def rpc(self, target: str, *args: Any) -> Any:
        return self.ok("rpc", target, json.dumps(list(args)))

    def set_version(self, vsn: str) -> None:
        p = self.project / "pyproject.toml"
        p.write_text(
            re.sub(r'^version = "[^"]+"', f'version = "{vsn}"', p.read_text(), count=1, flags=re.M)
        )

    def tarball(self, vsn: str) -> str:
        return f"_build/rel/shop-{vsn}.tar.gz"


def _env(root: Path) -> dict[str, str]:
    import os

    return {**os.environ, "RELHANDLER_ROOT": str(root), "COLUMNS": "200"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    base = tmp_path_factory.mktemp("teach")
    root = base / "root"
    subprocess.run(
        [sys.executable, "-m", "relhandler.cli", "new", "shop"], cwd=base, check=True, timeout=60
    )
    project = base / "shop"
    s = Shop(project, root, None)  # type: ignore[arg-type]
    s.ok("build")
    s.ok("deploy", s.tarball("0.1.0"), "--root", str(root))
    s.node = start_node(root)
    try:
        s.rpc("shop.server:hello", "Ada")
        s.rpc("shop.server:hello", "Bob")
        yield s
    finally:
        s.node.close()


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


def test_1_upgrade_to_the_current_release_is_a_no_op(shop: Shop) -> None:
    r = shop.run("upgrade", shop.tarball("0.1.0"))
    assert r.returncode == 0, r.stderr
    assert "already current and permanent; nothing to do" in r.stderr
    assert shop.rpc("shop.server:count") == 2


def test_2_a_broken_appup_fails_the_build_naming_the_src_file(shop: Shop) -> None:
    shop.set_version("0.2.0")
    (shop.project / "src/shop/server.py").write_text(SERVER_V2)
    appup = shop.project / "src/shop/shop.appup.toml"
    appup.write_text(
        APPUP.format(vsn="0.2.0", frm="0.1.0").replace('"update"', '"updat"'),
    )
    r = shop.run("build")
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r)
    assert "src/shop/shop.appup.toml: up[0].instructions[0]" in line
    assert "_build" not in line


def test_3_an_appup_without_the_path_names_the_src_file_in_relup(shop: Shop) -> None:
    appup = shop.project / "src/shop/shop.appup.toml"
    appup.write_text(APPUP.format(vsn="0.2.0", frm="0.0.9"))  # no entry from 0.1.0
    shop.ok("build")
    r = shop.run("relup", "--to", "0.2.0", "--from", "0.1.0")
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r)
    assert "src/shop/shop.appup.toml: no [[up]] entry matches shop 0.1.0" in line
    assert 'from = "0.1.0"' in line  # the fix


def test_4_install_of_a_release_not_unpacked_says_unpack(shop: Shop) -> None:
    r = shop.run("install", "0.2.0", "--dry-run")
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r)
    assert "release 0.2.0 is not unpacked" in line
    assert "relhandler unpack _build/rel/shop-0.2.0.tar.gz" in line


def test_5_a_forgotten_relup_then_a_rebuild_says_remove_or_replace(shop: Shop) -> None:
    (shop.project / "src/shop/shop.appup.toml").write_text(APPUP.format(vsn="0.2.0", frm="0.1.0"))
    shop.ok("build")
    r = shop.run("upgrade", shop.tarball("0.2.0"))  # forgot relup: unpacked, not installed
    assert r.returncode == 2, r.stderr
    assert "relhandler relup --to 0.2.0 --from 0.1.0" in _one_line_error(r)
    shop.ok("relup", "--to", "0.2.0", "--from", "0.1.0")  # the tarball now differs
    r = shop.run("upgrade", shop.tarball("0.2.0"))
    assert r.returncode == 2, r.stderr
    line = _one_line_error(r)
    assert "already on this node with different content" in line
    assert "relhandler remove 0.2.0" in line and "--replace" in line


def test_6_check_warns_the_declared_state_changed_and_code_change_did_not(shop: Shop) -> None:
    r = shop.run("check", "--vsn", "0.2.0", "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    hits = [w for w in warnings if "declared state type State changed" in w]
    assert hits and hits[0].startswith("src/shop/server.py: shop.server 0.1.0→0.2.0"), warnings


def test_7_the_preflight_refuses_the_forgotten_code_change_and_the_node_keeps_its_data(
    shop: Shop,
) -> None:
    pid = shop.ok("status")["pid"]
    r = shop.run("upgrade", shop.tarball("0.2.0"), "--replace")  # replaces the stale unpack
    assert r.returncode == 1, r.stderr
    line = _one_line_error(r)
    assert "preflight: shop.server.code_change would fail in 1 process(es) (<" in line
    assert "does not match shop.server.State: field 'names' is missing" in line
    assert "nothing was changed" in line
    # --dry-run says the same, exit 1, and --json carries the field
    r = shop.run("install", "0.2.0", "--dry-run", "--json")
    assert r.returncode == 1, r.stderr
    (row,) = json.loads(r.stdout)["error"]["details"]["failures"]
    assert (row["module"], row["field"], row["state_type"]) == (
        "shop.server",
        "names",
        "shop.server.State",
    )
    # the node kept its data and its code: the count survived, hello is 0.1.0's
    assert shop.rpc("shop.server:count") == 2
    assert shop.rpc("shop.server:hello", "Cy") == "Hello, Cy!"
    assert shop.ok("status")["pid"] == pid
    rows = {x["version"]: x["status"] for x in shop.ok("releases")}
    assert rows == {"0.1.0": "permanent", "0.2.0": "unpacked"}


def test_8_without_a_declared_type_check_warns_init_changed(shop: Shop) -> None:
    shop.set_version("0.3.0")
    src = shop.project / "src/shop/server.py"
    text = SERVER_V2.replace("-> tuple[str, State]", "")
    text = text[: text.index("class State")] + text[text.index("def start_link") :]
    src.write_text(text)
    (shop.project / "src/shop/shop.appup.toml").write_text(APPUP.format(vsn="0.3.0", frm="0.1.0"))
    shop.ok("build")
    r = shop.run("check", "--vsn", "0.3.0", "--from", "0.1.0", "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any(
        w.startswith(
            "src/shop/server.py: shop.server 0.1.0→0.3.0: its init changed but its "
            "code_change did not"
        )
        for w in warnings
    ), warnings


@pytest.mark.slow  # the positive path; the tour (test_readme) shows it in make test too
def test_9_a_code_change_that_migrates_passes_and_the_count_survives(shop: Shop) -> None:
    shop.set_version("0.2.0")
    fixed = SERVER_V2.replace(
        'return ("ok", {"count": 0, **state})', 'return ("ok", {"names": [], **state})'
    )
    (shop.project / "src/shop/server.py").write_text(fixed)
    (shop.project / "src/shop/shop.appup.toml").write_text(APPUP.format(vsn="0.2.0", frm="0.1.0"))
    shop.ok("build")
    shop.ok("relup", "--to", "0.2.0", "--from", "0.1.0")
    # Ada and Bob, and Cy when step 7 ran (not under `-m slow`, which runs this step alone)
    before = shop.rpc("shop.server:count")
    assert before >= 2
    r = shop.run("upgrade", shop.tarball("0.2.0"), "--replace")
    assert r.returncode == 0, r.stderr
    assert shop.rpc("shop.server:count") == before
    assert shop.rpc("shop.server:hello", "Dee") == "Hello again, Dee!"
