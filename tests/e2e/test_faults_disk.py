"""Fault injection at every file-system call of each release operation (issue 12, test 2).

In the style of SQLite's crash and I/O-error tests: a wrapper process
(:mod:`tests.e2e.faultfs`) runs the real node with ``os.replace``, ``os.rename``,
``os.fsync``, ``os.unlink``, ``os.rmdir``, ``os.mkdir``, ``os.write``, ``mkstemp`` and
``mkdtemp`` wrapped, and SIGKILLs itself right before or right after call N of one
operation, or makes call N fail with ENOSPC. N runs from 1 until the operation completes
without reaching N; nobody has to guess the points.

After a kill a plain node boots the root: the invariants hold (``check_root``), its view
agrees with the disk, and running the operation again finishes it. After an ENOSPC the
node reports one line naming the operation, the path and the error; memory, disk and the
running code agree, nothing changed, and a reboot sees the same.

The full sweeps are ``slow`` (``make test-full``); ``make test`` runs a spread sample.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relhandler.control.client import Client
from relhandler.errors import RelhandlerError, UnreachableError
from relhandler.handler import store
from relhandler.handler.unpack import deploy, unpack
from tests.fixtures.mkroot import NodeProc, start_node
from tests.fixtures.rootcheck import check_root, tree_snapshot

pytestmark = pytest.mark.e2e

GREETING = {"1.0.0": "Hello, X!", "2.0.0": "Howdy, X! Welcome..."}


def call(root: Path, op: str, **args: Any) -> Any:
    with Client(root, timeout=60) as c:
        return c.call(op, args)


def view(root: Path) -> dict[str, str]:
    return {r["version"]: r["status"] for r in call(root, "releases")}


def running(root: Path) -> str:
    v = call(root, "status")["release"]["version"]
    assert isinstance(v, str)
    return v


def disk_view(root: Path, current: str) -> dict[str, str]:
    """What the node must show: the disk's statuses with the running release current."""
    rels = store.read_releases(root)
    r = rels.get(current)
    if r is not None and r.status != "permanent":
        rels = rels.set_current(current)
    return {x.version: x.status for x in rels.releases}


def check_agree(root: Path) -> str:
    """Memory, disk and running code agree; returns the running version."""
    vsn = running(root)
    assert view(root) == disk_view(root, vsn)
    greet = call(root, "rpc", module="sample.greeter", function="greet", args=["X"])
    assert greet == GREETING[vsn], (vsn, greet)
    return vsn


def wait_running(root: Path, vsn: str, timeout: float = 60) -> None:
    """Until a node answers on ``root`` running ``vsn`` (after a re-exec)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if running(root) == vsn:
                return
        except RelhandlerError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"no node running {vsn} on {root}")


# -- the operations ------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """One operation: the root it starts from, what runs unarmed first, the armed op, and
    how it is finished after a crash."""

    name: str
    op: str  # ReleaseHandler method (the armed one)
    version: str | None
    pristine: str  # key of the prepared root
    setup: Callable[[Path], None]
    run: Callable[[Path, Path], Any]
    finish: Callable[[Path, Path], None]


def _nothing(root: Path) -> None:
    pass


def _install2(root: Path) -> None:
    call(root, "install", version="2.0.0")


def _finish_unpack(root: Path, builds: Path) -> None:
    call(root, "unpack", tarball=str(builds / "sample-2.0.0.tar.gz"))
    assert view(root)["2.0.0"] == "unpacked"


def _finish_make_permanent(root: Path, builds: Path) -> None:
    if running(root) == "1.0.0":
        call(root, "install", version="2.0.0")
    call(root, "make_permanent", version="2.0.0")
    assert view(root) == {"1.0.0": "old", "2.0.0": "permanent"}


def _finish_remove(root: Path, builds: Path) -> None:
    if "1.0.0" in view(root):
        call(root, "remove", version="1.0.0")
    assert view(root) == {"2.0.0": "permanent"}
    assert not (root / "releases/1.0.0").exists()
    assert not (root / "lib/sample-1.0.0").exists()


def _finish_reboot_old(root: Path, builds: Path) -> None:
    if store.read_start(root) != store.StartFile("1.0.0"):
        call(root, "reboot_old", version="1.0.0")
        wait_running(root, "1.0.0")
    assert view(root) == {"1.0.0": "permanent", "2.0.0": "old"}


def _finish_install(root: Path, builds: Path) -> None:
    if running(root) != "1.0.0":
        call(root, "install", version="1.0.0")
    assert running(root) == "1.0.0"
    assert view(root) == {"1.0.0": "current", "2.0.0": "permanent"}


def _run(op: str, **args: str) -> Callable[[Path, Path], Any]:
    def run(root: Path, builds: Path) -> Any:
        a = {k: str(builds / v) if k == "tarball" else v for k, v in args.items()}
        return call(root, op, **a)

    return run


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "unpack",
            "unpack",
            None,
            "v1",
            _nothing,
            _run("unpack", tarball="sample-2.0.0.tar.gz"),
            _finish_unpack,
        ),
        Scenario(
            "install",  # a downgrade to an old release: its status changes on disk
            "install",
            "1.0.0",
            "v2perm",
            _nothing,
            _run("install", version="1.0.0"),
            _finish_install,
        ),
        Scenario(
            "make_permanent",
            "make_permanent",
            None,
            "v2unpacked",
            _install2,
            _run("make_permanent", version="2.0.0"),
            _finish_make_permanent,
        ),
        Scenario(
            "remove",
            "remove",
            None,
            "v2perm",
            _nothing,
            _run("remove", version="1.0.0"),
            _finish_remove,
        ),
        Scenario(
            "reboot_old",
            "reboot_old",
            None,
            "v2perm",
            _nothing,
            _run("reboot_old", version="1.0.0"),
            _finish_reboot_old,
        ),
    )
}


@pytest.fixture(scope="module")
def pristine(sample_builds: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Release roots to copy for every point: v1 alone; v2 unpacked; v2 permanent, v1 old."""
    base = tmp_path_factory.mktemp("pristine")
    out = {}
    r = base / "v1"
    deploy(sample_builds / "sample-1.0.0.tar.gz", r)
    out["v1"] = r
    r = base / "v2unpacked"
    deploy(sample_builds / "sample-1.0.0.tar.gz", r)
    unpack(sample_builds / "sample-2.0.0.tar.gz", r)
    out["v2unpacked"] = r
    r = base / "v2perm"
    deploy(sample_builds / "sample-1.0.0.tar.gz", r)
    unpack(sample_builds / "sample-2.0.0.tar.gz", r)
    rels = store.read_releases(r)
    store.write_releases(
        r,
        store.Releases(
            tuple(
                store.ReleaseRecord(
                    x.name,
                    x.version,
                    "permanent" if x.version == "2.0.0" else "old",
                    x.python,
                    x.apps,
                    x.deps,
                )
                for x in rels.releases
            )
        ),
    )
    store.write_start(r, store.StartFile("2.0.0"))
    out["v2perm"] = r
    for r in out.values():
        check_root(r)
    return out


# -- one point -----------------------------------------------------------------------------
class FaultNode:
    """The wrapper node (tests.e2e.faultfs) on a fresh copy of a pristine root."""

    def __init__(self, root: Path, sc: Scenario, n: int, mode: str) -> None:
        self.root = root
        self.report = root.parent / f"{root.name}.calls"
        env = {
            **os.environ,
            "FAULT_OP": sc.op,
            "FAULT_VERSION": sc.version or "",
            "FAULT_N": str(n),
            "FAULT_MODE": mode,
            "FAULT_REPORT": str(self.report),
        }
        self.log = root.parent / f"{root.name}.log"
        with self.log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.faultfs", "start", "--root", str(root)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parents[2],
            )
        self.node = NodeProc(root, proc, self.log)
        self.node.wait_ready()

    def calls(self) -> int:
        return int(self.report.read_text())


@dataclass
class Point:
    reached: bool  # the fault fired (killed, or ENOSPC raised)
    calls: int | None = None  # when not reached: how many calls the op made


def fresh_root(pristine: Path, tmp: Path, tag: str) -> Path:
    root = tmp / tag
    shutil.copytree(pristine, root, ignore=shutil.ignore_patterns("run", "log"))
    return root


def kill_point(sc: Scenario, builds: Path, src: Path, tmp: Path, n: int, mode: str) -> Point:
    """SIGKILL right ``mode`` (before/after) call ``n``; reboot, check, finish, check."""
    root = fresh_root(src, tmp, f"{mode}-{n}")  # short: the socket path has a limit
    fn = FaultNode(root, sc, n, mode)
    try:
        sc.setup(root)
        died = False
        try:
            sc.run(root, builds)
        except UnreachableError:  # the node died under us
            died = True
        if not died:
            calls = fn.calls()
            assert calls < n, (sc.name, mode, n, calls)
            return Point(False, calls)
        code = fn.node.proc.wait(30)
        assert code == -signal.SIGKILL, (code, fn.node.log_text())
    finally:
        fn.node.close()
    node = start_node(root)  # the next boot recovers
    try:
        check_root(root)
        check_agree(root)
        sc.finish(root, builds)
        check_root(root)
        check_agree(root)
    finally:
        _close(node)
    return Point(True)


def _close(node: NodeProc) -> None:
    # a reboot_old re-exec keeps the pid: stop whatever runs there
    node.close()


def enospc_point(sc: Scenario, builds: Path, src: Path, tmp: Path, n: int) -> Point:
    """Call ``n`` fails with ENOSPC: one line, nothing changed, memory = disk = code."""
    root = fresh_root(src, tmp, f"enospc-{n}")
    fn = FaultNode(root, sc, n, "enospc")
    try:
        sc.setup(root)
        before = tree_snapshot(root)
        before_view = view(root)
        err: RelhandlerError | None = None
        try:
            sc.run(root, builds)
        except RelhandlerError as e:
            err = e
        if err is not None:
            e = err
            assert e.code == "io_error", (n, e.code, e.message)
            msg = e.message
            assert "\n" not in msg and "Traceback" not in msg, msg
            assert msg.startswith(sc.op.replace("_", "-") + " "), msg
            assert "No space left on device (ENOSPC)" in msg, msg
            assert "nothing was changed" in msg, msg
            assert tree_snapshot(root) == before, msg
            assert view(root) == before_view, msg
            check_root(root)
            vsn = check_agree(root)
            reached = True
        else:
            if fn.node.proc.poll() is None and sc.op == "reboot_old":
                wait_running(root, "1.0.0")
            calls = fn.calls()
            if calls < n:
                return Point(False, calls)
            # the failed call was a delete that went through on the retry
            reached = True
            vsn = check_agree(root)
            check_root(root)
        shown = view(root)
        fn.node.kill9()
    finally:
        fn.node.close()
    node = start_node(root)
    try:
        check_root(root)
        assert running(root) == store.read_start(root).permanent  # type: ignore[union-attr]
        after = view(root)
        assert {v: ("unpacked" if s == "current" else s) for v, s in shown.items()} == {
            v: ("unpacked" if s == "current" else s) for v, s in after.items()
        }, (shown, after, vsn)
    finally:
        _close(node)
    return Point(reached)


def count_calls(sc: Scenario, builds: Path, src: Path, tmp: Path) -> int:
    """How many wrapped calls the operation makes (armed at a point it never reaches)."""
    p = kill_point(sc, builds, src, tmp, 10**9, "before")
    assert not p.reached and p.calls is not None and p.calls > 0
    return p.calls


def sweep(
    sc: Scenario, builds: Path, src: Path, tmp: Path, mode: str, points: Iterator[int] | None
) -> int:
    """Run the points (default: N = 1, 2, ... until the op completes without reaching N);
    returns how many were covered."""
    covered = 0
    ns = points if points is not None else iter(range(1, 10**6))
    for n in ns:
        p = (
            enospc_point(sc, builds, src, tmp, n)
            if mode == "enospc"
            else kill_point(sc, builds, src, tmp, n, mode)
        )
        if not p.reached:
            break
        covered += 1
    return covered


MODES = ("before", "after", "enospc")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_at_every_fs_call(
    name: str,
    mode: str,
    sample_builds: Path,
    pristine: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sc = SCENARIOS[name]
    covered = sweep(sc, sample_builds, pristine[sc.pristine], tmp_path, mode, None)
    with capsys.disabled():
        print(f"\n{name}: {mode}: {covered} fault points covered")
    assert covered > 0


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_sample(
    name: str,
    sample_builds: Path,
    pristine: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A spread of the full sweep (which is ``slow``): per operation, ENOSPC early in its
    calls and one SIGKILL, right before its last call or right after its middle one, the
    kill mode alternating between operations so both are sampled (each point boots the node
    twice: a third per operation cost more than anything else in ``make test``)."""
    sc = SCENARIOS[name]
    src = pristine[sc.pristine]
    total = count_calls(sc, sample_builds, src, tmp_path)
    kill = (
        {"before": total} if list(SCENARIOS).index(name) % 2 == 0 else {"after": max(1, total // 2)}
    )
    picks = {**kill, "enospc": 1 + total // 4}
    done = []
    for mode, n in picks.items():
        assert sweep(sc, sample_builds, src, tmp_path, mode, iter([n])) == 1, (mode, n)
        done.append(f"{mode}@{n}")
    with capsys.disabled():
        print(f"\n{name}: {total} fs calls; sampled {', '.join(done)}")


# -- deploy: no node, the CLI's own file-system calls --------------------------------------
def _deploy(
    tarball: Path, root: Path, n: int | None, mode: str
) -> subprocess.CompletedProcess[str]:
    """``relhandler deploy`` (``n`` None) or the faultfs wrapper armed at call ``n``."""
    report = root.parent / f"{root.name}.calls"
    env = {**os.environ, "FAULT_OP": "deploy", "FAULT_N": str(n or 0), "FAULT_MODE": mode}
    env["FAULT_REPORT"] = str(report)
    mod = "relhandler.cli" if n is None else "tests.e2e.faultfs"
    return subprocess.run(
        [sys.executable, "-m", mod, "deploy", str(tarball), "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )


def deploy_point(builds: Path, tmp: Path, n: int, mode: str) -> Point:
    """Deploy into a new root with a SIGKILL before/after call ``n``, or ENOSPC at it; then
    deploying again finishes it, and the root is consistent."""
    tarball = builds / "sample-1.0.0.tar.gz"
    root = tmp / f"deploy-{mode}-{n}"
    r = _deploy(tarball, root, n, mode)
    calls = (root.parent / f"{root.name}.calls").read_text() if r.returncode != -9 else ""
    if r.returncode == 0 and int(calls) < n:
        return Point(False, int(calls))
    if mode == "enospc" and r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, (n, r.returncode, r.stderr)
        assert lines[0].startswith("Error: deploy 1.0.0 failed: "), lines
        assert "No space left on device (ENOSPC)" in lines[0], lines
        if "nothing was changed" in lines[0]:
            assert not (root / "releases/RELEASES.toml").exists(), lines
            assert not list(root.glob("*/*")), (lines, sorted(root.rglob("*")))
        else:
            assert "recovered at the next operation" in lines[0], lines
    elif mode != "enospc":
        assert r.returncode == -signal.SIGKILL, (n, r.returncode, r.stderr)
    # (rc 0 under ENOSPC: the failed call was one whose error the deploy may ignore)
    again = _deploy(tarball, root, None, mode)
    assert again.returncode == 0, (n, mode, again.stderr)
    check_root(root)
    assert store.read_start(root) == store.StartFile("1.0.0")
    return Point(True)


def deploy_sweep(builds: Path, tmp: Path, mode: str, points: Iterator[int]) -> int:
    covered = 0
    for n in points:
        if not deploy_point(builds, tmp, n, mode).reached:
            break
        covered += 1
    return covered


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", MODES)
def test_fault_at_every_fs_call_of_deploy(
    mode: str, sample_builds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    covered = deploy_sweep(sample_builds, tmp_path, mode, iter(range(1, 10**6)))
    with capsys.disabled():
        print(f"\ndeploy: {mode}: {covered} fault points covered")
    assert covered > 0


def test_deploy_fault_sample(
    sample_builds: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The end of a deploy, where its journal is committed: killed right before the
    journal's unlink (deploying again must finish it, RELEASES.toml already written), and
    ENOSPC at the very last call (the fsync after that unlink: the deploy is done, not
    "nothing changed"), plus one SIGKILL mid-way. No node: each point is two CLI runs."""
    p = deploy_point(sample_builds, tmp_path, 10**9, "before")
    assert not p.reached and p.calls is not None
    total = p.calls
    picks = {"before": total - 1, "after": total // 2, "enospc": total}
    for mode, n in picks.items():
        assert deploy_sweep(sample_builds, tmp_path, mode, iter([n])) == 1, (mode, n)
    with capsys.disabled():
        print(f"\ndeploy: {total} fs calls; sampled {picks}")
