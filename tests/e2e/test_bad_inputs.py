"""Every bad input of issue 12, table-driven, against the real CLI and a real node.

For each row: the documented exit code, exactly one stderr line, no "Traceback" and no
"internal error", and a byte-identical tree (files and directories) where the input pointed.
Then the tarball bombs: refused in one line while a concurrent ping keeps answering within
100 ms, nothing left in the root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relhandler.control.client import Client
from tests.e2e.conftest import SAMPLE
from tests.e2e.hostile import (
    crafted_tarball,
    gzip_bomb,
    hostile_tarball,
    many_members,
    pax_bomb,
)
from tests.e2e.test_faults_live import Pinger
from tests.fixtures.mkroot import NodeProc, cli, start_node
from tests.fixtures.rootcheck import check_root

pytestmark = pytest.mark.e2e

PING_BOUND = 0.1  # seconds: what issue 12 allows a ping to wait during a hostile unpack


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every file (bytes) and directory (None) under ``top``, but a node's run/ and log/."""
    out: dict[str, bytes | None] = {}
    for p in sorted(top.rglob("*")):
        rel = p.relative_to(top)
        if {"run", "log", "__pycache__"} & set(rel.parts):
            continue
        out[rel.as_posix()] = None if p.is_dir() else p.read_bytes()
    return out


@dataclass
class Env:
    builds: Path  # sample-{1,2,3}.0.0.tar.gz
    root: Path  # a running node: 1.0.0 permanent, 2.0.0 unpacked
    node: NodeProc
    pristine: Path  # a deployed 1.0.0 root, never started: copied for the start rows
    work: Path


@pytest.fixture(scope="module")
def env(sample_builds: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("bad")
    root, pristine = work / "root", work / "pristine"
    for r in (root, pristine):
        cli("deploy", str(sample_builds / "sample-1.0.0.tar.gz"), "--root", str(r), check=True)
    node = start_node(root)
    try:
        cli("unpack", str(sample_builds / "sample-2.0.0.tar.gz"), "--root", str(root), check=True)
        yield Env(sample_builds, root, node, pristine, work)
    finally:
        node.close()


# A row: (env, tmp_path) -> (argv, the directory that must not change, exit code).
Row = Callable[[Env, Path], tuple[list[str], Path, int]]


def _project(tmp: Path, edit: Callable[[str], str]) -> tuple[list[str], Path, int]:
    proj = tmp / "proj"
    shutil.copytree(SAMPLE / "v1", proj)
    pp = proj / "pyproject.toml"
    pp.write_text(edit(pp.read_text()))
    # the whole tmp dir is watched: a build writing outside its --out shows up
    return ["build", "--project", str(proj), "--out", str(tmp / "out")], tmp, 2


def build(edit: Callable[[str], str]) -> Row:
    return lambda e, tmp: _project(tmp, edit)


def unpack(make: Callable[[Env, Path], Path], code: int = 2) -> Row:
    def row(e: Env, tmp: Path) -> tuple[list[str], Path, int]:
        return ["unpack", str(make(e, tmp / "bad.tar.gz")), "--root", str(e.root)], e.root, code

    return row


def crafted(src: str, **kw: object) -> Callable[[Env, Path], Path]:
    return lambda e, out: crafted_tarball(e.builds / f"sample-{src}.tar.gz", out, **kw)  # type: ignore[arg-type]


def hostile(kind: str) -> Callable[[Env, Path], Path]:
    return lambda e, out: hostile_tarball(e.builds / "sample-3.0.0.tar.gz", out, kind)


def on_node(*argv: str, code: int = 2) -> Row:
    return lambda e, tmp: ([*argv, "--root", str(e.root)], e.root, code)


def stopped_root(prepare: Callable[[Path], None], *argv: str, code: int = 2) -> Row:
    def row(e: Env, tmp: Path) -> tuple[list[str], Path, int]:
        root = tmp / "r"
        shutil.copytree(e.pristine, root)
        prepare(root)
        return [*argv, "--root", str(root)], root, code

    return row


def _empty_cookie(root: Path) -> None:
    (root / "run").mkdir(mode=0o700)
    fd = os.open(root / "run" / "cookie", os.O_WRONLY | os.O_CREAT, 0o600)
    os.close(fd)


def _releases(text: Callable[[str], str]) -> Callable[[Path], None]:
    def prepare(root: Path) -> None:
        p = root / "releases" / "RELEASES.toml"
        p.write_text(text(p.read_text()))

    return prepare


def _deploy_to_file(e: Env, tmp: Path) -> tuple[list[str], Path, int]:
    (tmp / "afile").write_text("not a directory\n")
    return ["deploy", str(e.builds / "sample-1.0.0.tar.gz"), "--root", str(tmp / "afile")], tmp, 2


def _deploy_py99(e: Env, tmp: Path) -> tuple[list[str], Path, int]:
    bad = crafted("1.0.0", edit=lambda t: t.replace('">=3.11"', '">=99"'))(e, tmp / "b.tar.gz")
    return ["deploy", str(bad), "--root", str(tmp / "new")], tmp, 1  # as at boot


LONG = "1.0." + ".".join(["1"] * 150)
NESTED = "[" * 1000 + "]" * 1000

ROWS: dict[str, Row] = {
    # pyproject.toml (build)
    "build/tool-not-a-table": build(lambda t: "tool = 5\n" + t.split("[tool.relhandler")[0]),
    "build/project-a-string": build(lambda t: 'project = "x"\n' + t.split("\n\n", 1)[1]),
    "build/dependency-not-a-string": build(
        lambda t: t.replace("dependencies = []", "dependencies = [5]")
    ),
    "build/dependencies-a-string": build(
        lambda t: t.replace("dependencies = []", 'dependencies = "requests"')
    ),
    "build/version-too-long": build(
        lambda t: t.replace('version = "1.0.0"', f'version = "{LONG}"')
    ),
    "build/app-name-a-path": build(
        lambda t: t.replace('applications = ["sample"]', 'applications = ["../../escape"]')
    ),
    "build/release-name-markup": build(
        lambda t: t.replace('name = "sample"\n', 'name = "[bold]x"\n')
    ),
    # the control socket
    "rpc/args-nested-1000-deep": on_node("rpc", "sample.greeter:pid", NESTED),
    "install/nan-code-change-timeout": on_node(
        "install", "2.0.0", "--dry-run", "--code-change-timeout", "nan"
    ),
    "install/nan-suspend-timeout": on_node(
        "install", "2.0.0", "--dry-run", "--suspend-timeout", "nan"
    ),
    "purge/unknown-module": on_node("purge", "no.such", code=1),
    # tarballs (unpack on the running node)
    "unpack/python-99": unpack(
        crafted("3.0.0", edit=lambda t: t.replace('">=3.11"', '">=99"')), code=1
    ),
    "unpack/equal-version-2.0": unpack(crafted("2.0.0", version="2.0")),
    "unpack/equal-version-v2.0.0": unpack(crafted("2.0.0", version="v2.0.0")),
    "unpack/equal-version-2.0.0.0": unpack(crafted("2.0.0", version="2.0.0.0")),
    "unpack/deps-dotdot": unpack(crafted("3.0.0", edit=lambda t: 'deps = "../../x"\n' + t)),
    "unpack/deps-dot": unpack(crafted("3.0.0", edit=lambda t: 'deps = "."\n' + t)),
    "unpack/deps-not-in-tarball": unpack(
        crafted("3.0.0", edit=lambda t: 'deps = "deps-0a1b"\n' + t)
    ),
    "unpack/release-name-markup": unpack(
        crafted("3.0.0", edit=lambda t: t.replace('name = "sample"', 'name = "[bold]x"', 1))
    ),
    "unpack/app-name-a-path": unpack(
        crafted("3.0.0", edit=lambda t: t.replace('{ name = "sample"', '{ name = "../../escape"'))
    ),
    # files the release does not own: a lib dir of no app of it (an orphan, or one planted
    # for a later release), a file loose in releases/, a name with a line break
    "unpack/stowaway-lib-dir": unpack(crafted("3.0.0", extra={"lib/stow-9.9.9/x.py": b"1\n"})),
    "unpack/later-release-lib-dir": unpack(
        crafted("3.0.0", extra={"lib/sample-4.0.0/sample/__init__.py": b"1\n"})
    ),
    "unpack/file-loose-in-releases": unpack(crafted("3.0.0", extra={"releases/x.toml": b""})),
    "unpack/name-with-newline": unpack(
        crafted("3.0.0", extra={"lib/sample-3.0.0/sample/a\nb.py": b"1\n"})
    ),
    "unpack/version-too-long": unpack(crafted("3.0.0", version="3.0." + ".".join(["1"] * 40))),
    **{
        f"unpack/hostile-{k}": unpack(hostile(k))
        for k in (
            "dotdot",
            "absolute",
            "symlink",
            "hardlink",
            "device",
            "unlisted",
            "mismatch",
            "truncated",
            "file_and_dir",
        )
    },
    # deploy (no node)
    "deploy/root-is-a-file": _deploy_to_file,
    "deploy/python-99": _deploy_py99,
    # a stopped root
    "start/empty-cookie": stopped_root(_empty_cookie, "start"),
    "start/empty-RELEASES.toml": stopped_root(_releases(lambda t: ""), "start"),
    "releases/lib-dir-a-path": stopped_root(
        _releases(lambda t: t.replace('dir = "lib/sample-1.0.0"', 'dir = "lib/../../x"')),
        "releases",
    ),
}


@pytest.mark.parametrize("case", list(ROWS))
def test_bad_input_is_one_line_and_changes_nothing(env: Env, tmp_path: Path, case: str) -> None:
    argv, watched, code = ROWS[case](env, tmp_path)
    before = snapshot(watched)
    r = cli(*argv)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert lines[0].startswith("Error: "), r.stderr
    assert snapshot(watched) == before
    if watched == env.root:
        assert env.node.proc.poll() is None
        assert cli("ping", "--root", str(env.root)).returncode == 0


def test_start_on_a_read_only_root_is_one_line(env: Env, tmp_path: Path) -> None:
    """EROFS for real: the root bind-mounted read-only in a private mount namespace."""
    root = tmp_path / "ro"
    shutil.copytree(env.pristine, root)
    before = snapshot(root)
    cmd = (
        f"mount --bind {root} {root} && mount -o remount,ro,bind {root} && "
        f"exec {sys.executable} -m relhandler.cli start --root {root}"
    )
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no mount namespaces here (unshare -m)")
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "Read-only file system (EROFS)" in lines[0] and "must be writable" in lines[0]
    assert snapshot(root) == before


class Lateness:
    """A thread of the test process sleeping 20 ms at a time: how late it wakes is what the
    machine (2 shared cores) imposes on any process at that moment, node or not."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            time.sleep(0.02)
            self.worst = max(self.worst, time.monotonic() - t0 - 0.02)

    def __enter__(self) -> Lateness:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(30)


def _refused_while_pinging(env: Env, bad: Path, message: str) -> None:
    """Unpack ``bad`` with a ping every 20 ms on another connection: no ping may wait more
    than 100 ms beyond the worst scheduling delay the machine imposed meanwhile on a thread
    of this process (measured alongside). A node that stalls on the tarball (it answered
    nothing for 9 s before issue 12) fails however loaded the machine is."""
    before = snapshot(env.root)
    t0 = time.monotonic()
    with Lateness() as late, Pinger(env.root) as p:
        r = cli("unpack", str(bad), "--root", str(env.root), timeout=600)
    took = time.monotonic() - t0
    assert not p.errors, p.errors
    assert p.count > 0
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr
    assert snapshot(env.root) == before
    check_root(env.root)
    bound = PING_BOUND + late.worst
    print(
        f"\n{bad.name}: refused in {took:.1f} s; {p.count} pings, worst {p.worst * 1000:.1f} ms "
        f"(machine delay meanwhile: {late.worst * 1000:.1f} ms; bound {bound * 1000:.0f} ms)"
    )
    assert p.worst < bound, f"a ping waited {p.worst * 1000:.0f} ms"


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_gzip_bomb_is_refused_while_the_node_answers(env: Env, tmp_path: Path) -> None:
    # 64 MiB of zeros that must be read and hashed, then a member that would cross 2 GiB
    bomb = gzip_bomb(tmp_path / "bomb.tar.gz", member_bytes=64 << 20, sizes=(1, 32))
    _refused_while_pinging(env, bomb, "unpacks to more than 2147483648 bytes")


def test_a_pax_header_bomb_is_refused_within_the_verifiers_memory(env: Env, tmp_path: Path) -> None:
    # 800 KB declaring a 600 MiB pax header, which tarfile reads whole before any member
    # limit applies (it took the verifier 1 GiB for 512 MiB): refused at its 512 MiB bound
    bomb = pax_bomb(tmp_path / "pax.tar.gz", header_mib=600)
    _refused_while_pinging(env, bomb, "reading it takes more than 512 MiB")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_full_gzip_bomb_reads_at_most_the_limit_in_bounded_memory(env: Env, tmp_path: Path) -> None:
    # 2.6 MB that inflate to 2.5 GiB: four 512 MiB members are read (2 GiB), the fifth refused
    bomb = gzip_bomb(tmp_path / "bomb.tar.gz", member_bytes=512 << 20, sizes=(1, 1, 1, 1, 1))
    assert bomb.stat().st_size < 3 << 20
    rss0 = _vm_hwm(env.node.proc.pid)
    _refused_while_pinging(env, bomb, "unpacks to more than 2147483648 bytes")
    assert _vm_hwm(env.node.proc.pid) - rss0 < 100 << 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_100k_members_are_refused_while_the_node_answers(env: Env, tmp_path: Path) -> None:
    many = many_members(tmp_path / "many.tar.gz", 100_001)
    _refused_while_pinging(env, many, "more than 100000 members")


def test_a_deep_frame_on_the_socket_closes_only_that_connection(env: Env) -> None:
    """The CLI refuses deep rpc args; a raw client gets its connection closed, nothing else."""
    import struct

    from relhandler.control import protocol
    from relhandler.errors import ProtocolError

    with Client(env.root) as c:
        body = (
            '{"id":1,"op":"rpc","args":{"module":"sample.greeter","function":"pid","args":'
            + "[" * 100_000
            + "]" * 100_000
            + "}}"
        ).encode()
        sock = c._sock
        assert sock is not None
        sock.sendall(struct.pack(">I", len(body)) + body)
        with pytest.raises(ProtocolError):
            protocol.recv_frame(sock)
    assert cli("ping", "--root", str(env.root)).returncode == 0
    assert "RecursionError" not in env.node.log_text()
