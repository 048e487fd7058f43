"""`relhandler console` against a real node of the sample release: through a pseudo-terminal
(history, completion, Ctrl-D), with `-c` and pipes (no TTY), and refused without the cookie."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.ptyproc import PtyProc
from tests.fixtures.mkroot import NodeProc, cli, start_node

pytestmark = pytest.mark.e2e

PROMPT = r">>> "


def _console_argv(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "relhandler.cli", "console", "--root", str(root), *extra]


def _env(home: Path) -> dict[str, str]:
    # HOME: the history file goes to the test's directory; TERM=dumb: no escape sequences
    return {**os.environ, "HOME": str(home), "TERM": "dumb", "NO_COLOR": "1"}


def deploy_sample(builds: Path, root: Path) -> Path:
    cli("deploy", str(builds / "sample-1.0.0.tar.gz"), "--root", str(root), check=True)
    return root


@pytest.fixture(scope="module")
def sample_node(
    sample_builds: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProc]:
    """One node of sample 1.0.0 for the console tests that do not change its code."""
    root = deploy_sample(sample_builds, tmp_path_factory.mktemp("con") / "root")
    n = start_node(root)
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def tty(sample_node: NodeProc, tmp_path: Path) -> Iterator[PtyProc]:
    p = PtyProc(_console_argv(sample_node.root), env=_env(tmp_path))
    try:
        p.expect("Ctrl-D leaves")
        p.expect(">>> ")
        yield p
    finally:
        p.close()


def run(p: PtyProc, line: str, answer: str) -> re.Match[str]:
    """Type ``line``; wait for ``answer`` (a regex) and the next prompt; the match."""
    p.sendline(line)
    m = p.expect(answer)
    p.expect(PROMPT)
    return m


def test_console_on_a_tty_reads_state_calls_survives_a_raise_and_leaves(
    tty: PtyProc, sample_node: NodeProc, tmp_path: Path
) -> None:
    root = sample_node.root
    n = int(run(tty, 'await get_state("counter")', r"\{'n': (\d+)\}").group(1))
    run(tty, 'await call("counter", "incr")', rf"\n{n + 1}\n")
    # an input that raises: its traceback, and the node (and this console) go on
    for line in ("def boom():", "    return 1 / 0"):
        tty.sendline(line)
        tty.expect(r"\.\.\. ")
    tty.sendline("")
    tty.expect(PROMPT)
    run(tty, "boom()", r'File "<console#\d+>", line 2, in boom\n +return 1 / 0')
    assert "ZeroDivisionError: division by zero" in tty.transcript
    run(tty, 'await call("counter", "get")', rf"\{{'n': {n + 1}\}}")
    # Tab completion asks the node for the names in this session
    tty.send("get_st\t")
    tty.expect("get_state\\(")
    run(tty, '"counter")', rf"\{{'n': {n + 1}\}}")
    # Ctrl-C ends an input that waits forever, and only that input
    tty.sendline("await receive()")
    tty.expect(r"await receive\(\)\n")
    time.sleep(0.5)  # let the input reach the node (a Ctrl-C before it clears the line)
    tty.send("\x03")
    tty.expect(r"KeyboardInterrupt \(the shell process")
    tty.expect(PROMPT)
    run(tty, 'await call("counter", "get")', rf"\{{'n': {n + 1}\}}")
    # Ctrl-D leaves; the node keeps running
    tty.send("\x04")
    assert tty.wait() == 0
    assert sample_node.proc.poll() is None
    assert cli("ping", "--root", str(root)).returncode == 0
    hist = (tmp_path / ".relhandler_history").read_text()
    assert 'await call("counter", "incr")' in hist


def test_console_c_and_stdin_without_a_tty(sample_node: NodeProc) -> None:
    root = sample_node.root

    def console(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _console_argv(root, *args), input=stdin, capture_output=True, text=True, timeout=60
        )

    # docs/shell.md's examples
    r = console("-c", 'print("side"); get_state("counter")')
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"side\n\{'n': \d+\}\n", r.stdout), r.stdout
    r = console("-c", '{}["missing"]')
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("Traceback") and '    {}["missing"]\n' in r.stderr
    assert r.stderr.rstrip().endswith("KeyError: 'missing'")
    r = console(stdin="x = len(registered())\nx > 0\n")
    assert (r.returncode, r.stdout) == (0, "True\n"), r.stderr
    # the console's imports are the node's: what the release does not ship is refused
    r = console("-c", "import sortedcontainers")
    assert r.returncode == 1 and r.stdout == "", r.stderr
    assert "NotShippedError: module 'sortedcontainers' is not shipped" in r.stderr, r.stderr
    assert cli("ping", "--root", str(root)).returncode == 0


def test_console_is_refused_without_the_cookie(sample_node: NodeProc, tmp_path: Path) -> None:
    """The console runs any code: it is exactly as guarded as install (the cookie)."""
    fake = tmp_path / "fake"
    (fake / "run").mkdir(parents=True, mode=0o700)
    (fake / "run" / "node.sock").symlink_to(sample_node.root / "run" / "node.sock")
    (fake / "run" / "cookie").write_text("0" * 64)
    marker = tmp_path / "ran"
    r = subprocess.run(
        _console_argv(fake, "-c", f"open({str(marker)!r}, 'w')"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "refused the cookie" in r.stderr
    assert not marker.exists()


def test_the_seed_greeter_demo_in_the_console(
    sample_builds: Path, tmp_path: Path, nodes: list[NodeProc]
) -> None:
    """docs/shell.md's session: the raw greeter loops through a qualified call, so an edit
    loaded while the console is open greets the new way from the same pid; a load while it
    is still in the oldest code kills it, and its supervisor restarts it on current code."""
    root = deploy_sample(sample_builds, tmp_path / "root")
    nodes.append(start_node(root))
    greeter_py = root / "lib" / "sample-1.0.0" / "sample" / "greeter.py"

    def edit(old: str, new: str) -> None:
        src = greeter_py.read_text()
        assert old in src
        greeter_py.write_text(src.replace(old, new))

    tty = PtyProc(_console_argv(root), env=_env(tmp_path))
    try:
        tty.expect("Ctrl-D leaves")
        tty.expect(PROMPT)
        pid = run(tty, 'greeter = whereis("greeter"); greeter', r"(<0\.\d+\.0>)").group(1)
        run(tty, 'await sample.greeter.greet("Ada")', r"'Hello, Ada!'")
        # edit v1 -> v2 while the console is open, and load it
        edit('f"Hello, {name}!"', 'f"Howdy, {name}!"')
        run(tty, 'r = await reload("sample.greeter"); r.old_code', rf"\({pid},\)")
        run(tty, 'await sample.greeter.greet("Ada")', r"'Howdy, Ada!'")
        run(tty, 'whereis("greeter") == greeter', r"\nTrue\n")
        # v3 while the greeter waits in v2's loop (no message since): it stays in old code
        edit('f"Howdy, {name}!"', 'f"Good day, {name}."')
        run(tty, 'r = await reload("sample.greeter"); r.old_code', rf"\({pid},\)")
        # v4: the greeter is in the oldest code, so the load kills it...
        edit('f"Good day, {name}."', 'f"Hi, {name}!"')
        run(tty, 'r = await reload("sample.greeter"); r.killed', rf"\({pid},\)")
        # ...and its supervisor restarts it on the current code, under a new pid (a person
        # types slower than it restarts; the test waits for it)
        tty.sendline("import asyncio")
        tty.expect(PROMPT)
        tty.sendline("while whereis('greeter') in (None, greeter): await asyncio.sleep(0.01)")
        tty.expect(r"\.\.\. ")
        tty.sendline("")
        tty.expect(PROMPT)
        new = run(tty, 'whereis("greeter")', r"(<0\.\d+\.0>)").group(1)
        assert new != pid
        run(tty, 'await sample.greeter.greet("Ada")', r"'Hi, Ada!'")
        run(tty, 'which("sample.greeter").current_file', r"greeter\.py'")
        tty.send("\x04")
        assert tty.wait() == 0
    finally:
        tty.close()
    assert "Traceback" not in tty.transcript, tty.transcript


@pytest.mark.slow
def test_the_console_on_a_dev_node(tmp_path: Path) -> None:
    """The same console on `relhandler dev`'s node: the project's source is what `which`
    names, and a save `dev` reloads is what the console calls next."""
    cli("new", "shop", "--dir", str(tmp_path / "shop"), check=True)
    project = tmp_path / "shop"
    root = project / "_build" / "dev"
    argv = [sys.executable, "-m", "relhandler.cli", "dev", "--project", str(project)]
    dev = PtyProc([*argv, "--debounce", "10"], env=_env(tmp_path), cwd=str(project))
    try:
        dev.expect(r"dev node of shop 0\.1\.0 up", timeout=60)

        def console(expr: str) -> str:
            r = subprocess.run(
                _console_argv(root, "-c", expr), capture_output=True, text=True, timeout=60
            )
            assert r.returncode == 0, r.stderr
            return r.stdout

        server = project / "src" / "shop" / "server.py"
        assert console('which("shop.server").current_file') == repr(str(server)) + "\n"
        pid = console('str(whereis("shop_server"))')
        assert console('await shop.server.hello("Ada")') == "'Hello, Ada!'\n"
        text = server.read_text()
        old = 'f"{greeting}, {request[1]}!"'
        assert old in text
        tmp = server.with_name(".server.py.swp")
        tmp.write_text(text.replace(old, 'f"{greeting} from the console, {request[1]}!"'))
        os.replace(tmp, server)
        dev.expect(r"reloaded shop\.server ")
        assert console('await shop.server.hello("Ada")') == "'Hello from the console, Ada!'\n"
        assert console('str(whereis("shop_server"))') == pid
        dev.send("\x03")
        assert dev.wait(30) == 0
    finally:
        dev.close()
