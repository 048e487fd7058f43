"""`make demo`: the sample app upgraded live, v1 → v2 → v1 → v2, made permanent, and a crash.

Everything goes through the real CLI (`relhandler build/relup/deploy/start/unpack/install/
make-permanent/releases`) and the real control socket; a TCP client, a websocket chat client
and a thread of calls run through every upgrade on the connections they opened on v1.
Exits 0 only if every check held.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from wsproto import ConnectionType, WSConnection
from wsproto import events as ws

from relhandler.control.client import Client
from relhandler.errors import RelhandlerError

HERE = Path(__file__).resolve().parent
VERSIONS = {"1.0.0": "v1", "2.0.0": "v2", "3.0.0": "v3"}
console = Console(highlight=False)


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.out = work / "rel"
        self.root = work / "root"
        self.failures: list[str] = []
        self.checks = 0
        self.room_pid = ""

    # -- helpers -----------------------------------------------------------------------
    def cli(self, *args: str, root: bool = True) -> Any:
        cmd = [sys.executable, "-m", "relhandler.cli", *args]
        if root:
            cmd += ["--root", str(self.root)]
        cmd.append("--json")
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(
                f"relhandler {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}"
            )
        return json.loads(r.stdout) if r.stdout.strip() else None

    def rpc(self, target: str, *args: Any) -> Any:
        mod, fun = target.split(":")
        with Client(self.root, timeout=10) as c:
            return c.call("rpc", {"module": mod, "function": fun, "args": list(args)})

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.checks += 1
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        if len(detail) > 70:
            detail = detail[:67] + "…"
        console.print(f"  {mark} {what}" + (f" [dim]({escape(detail)})[/]" if detail else ""))
        if not ok:
            self.failures.append(f"{what} {detail}".strip())

    def releases(self) -> None:
        rows = self.cli("releases")
        t = Table("version", "status", box=None, padding=(0, 2))
        for r in sorted(rows, key=lambda r: r["version"]):
            t.add_row(r["version"], r["status"])
        console.print(t)

    def step(self, title: str) -> None:
        console.rule(f"[bold]{title}")

    # -- the story ---------------------------------------------------------------------
    def build(self) -> None:
        self.step("build v1, v2, v3 and their relups")
        for vsn, d in VERSIONS.items():
            proj = self.work / "src" / d
            shutil.copytree(HERE / "versions" / d, proj)
            res = self.cli("build", "--project", str(proj), "--out", str(self.out), root=False)
            console.print(
                f"  built sample {vsn}: {Path(res['tarball']).name} "
                f"({res['size']:,} bytes, sha256 {res['sha256'][:12]}…)"
            )
        rel_dir = str(self.out / "sample")
        self.cli("relup", "--to", "2.0.0", "--from", "1.0.0", "--rel-dir", rel_dir, root=False)
        self.cli("relup", "--to", "3.0.0", "--from", "2.0.0", "--rel-dir", rel_dir, root=False)
        console.print("  relups: 1.0.0 ⇄ 2.0.0, 2.0.0 ⇄ 3.0.0")

    def start(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "relhandler.cli", "start", "--root", str(self.root), "--daemon"],
            check=True,
            capture_output=True,
            text=True,
        )

    def tcp(self) -> socket.socket:
        port = self.rpc("sample.listener:port")
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        return s

    @staticmethod
    def say(s: socket.socket, line: str) -> str:
        s.sendall((line + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                return "<closed>"
            buf += chunk
        return buf.decode().strip()

    def run(self) -> int:
        t0 = time.monotonic()
        self.build()
        self.step("deploy 1.0.0 and start the node")
        self.cli("deploy", str(self.out / "sample-1.0.0.tar.gz"))
        self.start()
        self.releases()
        greeter, counter = self.rpc("sample.greeter:pid"), self.rpc("sample.counter:pid")
        hello = self.rpc("sample.greeter:greet", "Alice")
        console.print(f"  greeter {greeter} says {hello!r}")
        self.check("v1 greets with Hello", hello == "Hello, Alice!", hello)
        for _ in range(3):
            self.rpc("sample.counter:incr")
        chat = self.tcp()
        first = self.say(chat, "hi")
        self.check("TCP chat answers in the v1 format", first == "echo: hi", first)
        room = Websocket(self.rpc("relhandler.web:port", "sample", "room"), "/?nick=alice")
        self.room_pid = self.rpc("sample.room:pid")
        console.print(f"  websocket chat room {self.room_pid} joined as alice")
        bob = Websocket(room.port, "/?nick=bob")  # another member: hears what alice says
        self.room_says(room, "hello", "", "the websocket chat room answers in the v1 format")

        load = Load(self.root)
        load.start()
        try:
            self.step("upgrade to 2.0.0 (unpack + install, not permanent yet)")
            self.cli("unpack", str(self.out / "sample-2.0.0.tar.gz"))
            res = self.cli("install", "2.0.0")
            console.print(f"  installed in {res['ms']:.1f} ms ({len(res['steps'])} steps)")
            self.releases()
            self.after_v2(greeter, counter, chat, room)

            self.step("downgrade to 1.0.0")
            res = self.cli("install", "1.0.0")
            console.print(f"  installed in {res['ms']:.1f} ms")
            self.releases()
            g = self.rpc("sample.greeter:greet", "Alice")
            self.check(
                "v1 greeting is back, same pid",
                g == "Hello, Alice!" and self.rpc("sample.greeter:pid") == greeter,
                g,
            )
            st = self.rpc("sample.counter:get")
            self.check(
                "counter state migrated down (history dropped)",
                set(st) == {"n"} and self.rpc("sample.counter:pid") == counter,
                str(st),
            )
            line = self.say(chat, "back")
            self.check("same TCP connection answers in the v1 format", line == "echo: back", line)
            self.room_says(room, "back", "", "the same websocket answers in the v1 format again")
            self.room_history(room)
            self.supervisor_step(v2=False)

            self.step("upgrade to 2.0.0 again and make it permanent")
            self.cli("install", "2.0.0")
            # the greeter waits in its old loop until its next message; greeting it moves it
            # to the new code, so make-permanent's brutal post-purge finds nobody to kill
            self.after_v2(greeter, counter, chat, room)
            self.cli("make-permanent", "2.0.0")
            self.releases()
            self.check(
                "make-permanent purged old code without killing anyone",
                self.rpc("sample.greeter:pid") == greeter,
                greeter,
            )
        finally:
            load.stop()
        self.check(
            "zero failed calls during the upgrades",
            load.failed == 0 and load.ok > 0,
            f"{load.ok} calls ok, {load.failed} failed",
        )
        chat.close()
        heard = [bob.hear() for _ in range(room.sent)]
        self.check(
            "bob heard alice's lines, each relayed in the version of its moment",
            heard
            == [
                "#1 alice: hello",
                "[v2] #2 alice: still there?",
                "#3 alice: back",
                "[v2] #4 alice: still there?",
            ],
            " | ".join(heard),
        )
        bob.close()
        code = room.close()
        self.check(
            "one websocket connection throughout, still open at the end",
            code == 1000,
            f"local port {room.local_port}, the server answered our close with {code}",
        )

        self.step("kill -9 the node and start it again")
        pid = self.cli("status")["pid"]
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        self.start()
        st = self.cli("status")
        self.check(
            "the node comes back on the permanent release 2.0.0",
            st["release"]["version"] == "2.0.0",
            st["release"]["version"],
        )
        g = self.rpc("sample.greeter:greet", "Alice")
        self.check("and greets in the v2 way", g.startswith("Howdy"), g)
        self.releases()
        self.cli("stop")
        console.rule()
        took = time.monotonic() - t0
        if self.failures:
            console.print(
                f"[bold red]{len(self.failures)} of {self.checks} checks failed[/] in {took:.1f}s:"
            )
            for f in self.failures:
                console.print(f"  - {f}")
            return 1
        console.print(f"[bold green]all {self.checks} checks held[/] in {took:.1f}s")
        return 0

    def supervisor_step(self, *, v2: bool) -> None:
        """The top supervisor gains the stats child live on the way up (the appup's
        `update sample.sup supervisor` + `restart_child`) and loses it on the way down."""
        kids = self.rpc("relhandler.runtime.supervisor:count_children", "sample_sup")
        if v2:
            up = self.rpc("sample.stats:uptime")
            self.check(
                "the top supervisor started its new stats child live",
                kids["specs"] == kids["active"] == 7 and isinstance(up, float),
                f"{kids['active']} of {kids['specs']} children running, stats up {up}s",
            )
        else:
            self.check(
                "the downgrade terminated and deleted the stats child",
                kids["specs"] == kids["active"] == 6,
                f"{kids['active']} of {kids['specs']} children running",
            )

    def room_says(self, room: Websocket, text: str, tag: str, what: str) -> None:
        """Post a line to the websocket chat room; the answer is the line's number in the
        room (history kept by sample.room), the version's tag and this connection's count
        (per-connection state, migrated by sample.wschat's code_change)."""
        room.sent += 1
        answer = room.say(text)
        want = f"{tag}#{room.sent} alice: {text} (you sent {room.sent})"
        self.check(what, answer == want, answer)

    def room_history(self, room: Websocket) -> None:
        lines = room.say("/history").split(" | ")
        self.check(
            "the room's history survived (a GenServer, same pid)",
            len(lines) == room.sent
            and lines[0] == "#1 alice: hello"
            and self.rpc("sample.room:pid") == self.room_pid,
            f"{len(lines)} lines, room {self.room_pid}",
        )

    def after_v2(self, greeter: str, counter: str, chat: socket.socket, room: Websocket) -> None:
        self.supervisor_step(v2=True)
        g = self.rpc("sample.greeter:greet", "Alice")
        self.check("greeter says Howdy", g == "Howdy, Alice! Welcome...", g)
        self.check("greeter kept its pid", self.rpc("sample.greeter:pid") == greeter, greeter)
        self.check("counter kept its pid", self.rpc("sample.counter:pid") == counter, counter)
        st = self.rpc("sample.counter:get")
        self.check(
            "counter state migrated: n kept, history added",
            isinstance(st, dict) and st.get("n", 0) >= 3 and "history" in st,
            str(st),
        )
        line = self.say(chat, "still there?")
        self.check(
            "the TCP connection opened on v1 answers in the v2 format",
            line == "[v2] still there?",
            line,
        )
        self.room_says(
            room,
            "still there?",
            "[v2] ",
            "the websocket opened on v1 is answered by v2, its state migrated",
        )
        self.room_history(room)


class Websocket:
    """A websocket client on a plain blocking socket; wsproto does all the framing."""

    def __init__(self, port: int, target: str) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.local_port = self.sock.getsockname()[1]
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: list[ws.Event] = []
        self.sent = 0  # lines this client posted (the demo's expectation of the server's count)
        self.sock.sendall(self.ws.send(ws.Request(host="127.0.0.1", target=target)))
        if not isinstance(self.next(), ws.AcceptConnection):
            raise RuntimeError("the websocket handshake was refused")

    def next(self) -> ws.Event | None:
        """The next event from the server (None: the socket closed)."""
        while not self.events:
            data = self.sock.recv(65536)
            self.ws.receive_data(data or None)
            self.events.extend(self.ws.events())
            if not data and not self.events:
                return None
        return self.events.pop(0)

    def say(self, text: str) -> str:
        """Send a text message and return the text answer (or ``<closed CODE>``)."""
        self.sock.sendall(self.ws.send(ws.Message(data=text)))
        return self.hear()

    def hear(self) -> str:
        """The next text message from the server (or ``<closed CODE>``)."""
        parts = []
        while True:
            ev = self.next()
            if isinstance(ev, ws.TextMessage):
                parts.append(ev.data)
                if ev.message_finished:
                    return "".join(parts)
            elif isinstance(ev, ws.Ping):
                self.sock.sendall(self.ws.send(ev.response()))
            elif ev is None or isinstance(ev, ws.CloseConnection):
                return f"<closed {getattr(ev, 'code', 1006)}>"

    def close(self) -> int:
        """Close cleanly; returns the server's close code."""
        self.sock.sendall(self.ws.send(ws.CloseConnection(code=1000)))
        while True:
            ev = self.next()
            if ev is None or isinstance(ev, ws.CloseConnection):
                self.sock.close()
                return ev.code if ev is not None else 1006


class Load(threading.Thread):
    """Calls the counter over the control socket in a loop, counting failures."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.ok = 0
        self.failed = 0
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        with Client(self.root, timeout=30) as c:
            while not self._halt.is_set():
                try:
                    c.call("rpc", {"module": "sample.counter", "function": "incr", "args": []})
                    self.ok += 1
                except RelhandlerError as e:
                    self.failed += 1
                    self.errors.append(e.message)
                time.sleep(0.005)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def main() -> int:
    keep = os.environ.get("RELHANDLER_DEMO_KEEP")
    work = Path(tempfile.mkdtemp(prefix="relhandler-demo-"))
    demo = Demo(work)
    try:
        return demo.run()
    except Exception as e:
        console.print(f"[bold red]demo failed:[/] {e}")
        return 1
    finally:
        sock = demo.root / "run" / "node.sock"
        if sock.exists():
            subprocess.run(
                [sys.executable, "-m", "relhandler.cli", "stop", "--root", str(demo.root)],
                capture_output=True,
                timeout=60,
            )
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
