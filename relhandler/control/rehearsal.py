"""``relhandler verify``: rehearse an upgrade on a real node in a temporary root.

Phases, in order: ``boot`` (OLD boots, load runs), ``upgrade`` (to NEW, then the health
checks), ``downgrade`` (back to OLD; the round trip of every migrated state is checked) and
``upgrade-again`` (to NEW once more, health checks again). Load runs in a thread of its own,
on its own control connection, through the release's hooks (``[tool.relhandler.verify]``,
carried in the release as ``releases/VSN/verify.toml``), during every phase and every install
but one: it pauses for the first upgrade, so that the states captured just before and just
after it are ``s`` and ``up(s)`` and nothing else (see ``control/verify_ops.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relhandler.control.client import Client
from relhandler.control.daemon import start_daemon
from relhandler.errors import InputError, ReleaseError, RelhandlerError
from relhandler.handler.events import read_events
from relhandler.handler.unpack import deploy
from relhandler.release.config import VerifyConfig, read_verify
from relhandler.release.relup import read_relup
from relhandler.release.restart import restarts

__all__ = ["PHASES", "Failure", "PhaseReport", "Report", "rehearse"]

PHASES = ("boot", "upgrade", "downgrade", "upgrade-again")
CALL_PAUSE = 0.005
"""Seconds between two load calls (about 200 calls/s: load, not a benchmark)."""
MIN_ROUND_WAIT = 60.0
"""Seconds a phase waits past ``--duration`` for each hook to have been called once."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One thing that went wrong: where, in which process and module, and what was raised."""

    phase: str
    what: str  # call, load, install, health, roundtrip, exit (a process.exit event)
    process: str
    module: str
    error: str

    def line(self) -> str:
        if self.what == "exit":  # from the node's event log: no hook failed, a process died
            return (
                f"phase {self.phase}: process {self.process} (initial call {self.module}) "
                f"{self.error}"
            )
        return (
            f"phase {self.phase}: {self.what} failed in process {self.process} "
            f"(module {self.module}): {self.error}"
        )


@dataclass(slots=True)
class PhaseReport:
    """What one phase did (the table's row)."""

    name: str
    release: str = ""
    calls: int = 0
    failed: int = 0
    max_latency_ms: float = 0.0
    migrated: int = 0
    suspended_ms: float = 0.0
    roundtrip_ok: int = 0
    roundtrip_failed: int = 0
    roundtrip_exempt: int = 0
    health_passed: int = 0
    health_failed: int = 0
    install_ms: float | None = None
    events: dict[str, int] = field(default_factory=dict)  # the node's events, by kind


@dataclass(slots=True)
class Report:
    """The whole rehearsal (``verify --json``)."""

    old: str
    new: str
    duration_s: float
    phases: list[PhaseReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    roundtrip: list[dict[str, Any]] = field(default_factory=list)
    hooks: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "old": self.old,
            "new": self.new,
            "duration_s": self.duration_s,
            "hooks": self.hooks,
            "phases": [asdict(p) for p in self.phases],
            "roundtrip": self.roundtrip,
            "failures": [asdict(f) for f in self.failures],
        }


def _split_mfn(s: str) -> tuple[str, str]:
    mod, _, fn = s.partition(":")
    return mod, fn


class _Load:
    """The load thread: hooks called in turn, each call counted and timed into the phase
    that is current when it ends."""

    def __init__(self, root: Path, report: Report) -> None:
        self.root = root
        self.report = report
        self.cfg = VerifyConfig()
        self.phase: PhaseReport | None = None
        self._run = threading.Event()  # set: calls go out
        self._idle = threading.Event()  # set: no call in flight
        self._idle.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._errors_seen: set[str] = set()
        self._thread = threading.Thread(target=self._main, name="verify-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def resume(self) -> None:
        self._run.set()

    def pause(self) -> None:
        """Stop sending; return once the call in flight (if any) has its answer."""
        self._run.clear()
        self._idle.wait()

    def close(self) -> None:
        self._stop.set()
        self._run.set()
        self._thread.join(30)

    def hooks(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """(what, process, module, control request) for each hook of the running release."""
        out: list[tuple[str, str, str, dict[str, Any]]] = []
        for name, req in self.cfg.calls:
            out.append(("call", name, "-", {"op": "verify_call", "name": name, "request": req}))
        if self.cfg.load:
            mod, fn = _split_mfn(self.cfg.load)
            out.append(("load", "rpc", mod, {"op": "rpc", "module": mod, "function": fn}))
        return out

    def _main(self) -> None:
        try:
            self._loop()
        except Exception as e:  # the load must not end in silence: it is a failure
            self._idle.set()
            with self._lock:
                name = self.phase.name if self.phase is not None else "boot"
                self.report.failures.append(
                    Failure(name, "load", "-", "-", f"the load stopped: {type(e).__name__}: {e}")
                )

    def _loop(self) -> None:
        with Client(self.root, timeout=60.0) as c:
            counter = itertools.count()
            while not self._stop.is_set():
                self._run.wait()
                if self._stop.is_set():
                    return
                hooks = self.hooks()
                if not hooks:
                    time.sleep(0.05)
                    continue
                what, proc, mod, req = hooks[next(counter) % len(hooks)]
                args = {k: v for k, v in req.items() if k != "op"}
                if req["op"] == "rpc":
                    args["args"] = []
                self._idle.clear()
                t0 = time.perf_counter()
                err: str | None = None
                try:
                    if self._run.is_set():
                        c.call(req["op"], args)
                    else:
                        continue
                except RelhandlerError as e:
                    err = e.message
                finally:
                    dt = (time.perf_counter() - t0) * 1000
                    self._idle.set()
                self._count(what, proc, mod, dt, err)
                time.sleep(CALL_PAUSE)

    def _count(self, what: str, proc: str, mod: str, ms: float, err: str | None) -> None:
        with self._lock:
            ph = self.phase
            if ph is None:
                return
            ph.calls += 1
            ph.max_latency_ms = max(ph.max_latency_ms, round(ms, 3))
            if err is not None:
                ph.failed += 1
                key = f"{ph.name}/{proc}/{err}"
                if key not in self._errors_seen:  # one failure per phase, hook and message
                    self._errors_seen.add(key)
                    self.report.failures.append(Failure(ph.name, what, proc, mod, err))


def _suspended_ms(steps: list[dict[str, Any]]) -> float:
    """Milliseconds from the first ``suspend`` step to the last ``resume`` one."""
    idx = [k for k, s in enumerate(steps) if str(s.get("instruction", "")).startswith("suspend")]
    res = [k for k, s in enumerate(steps) if str(s.get("instruction", "")).startswith("resume")]
    if not idx:
        return 0.0
    end = res[-1] if res else len(steps) - 1
    return round(sum(float(s.get("ms", 0.0)) for s in steps[idx[0] : end + 1]), 3)


def _install_failures(phase: str, e: RelhandlerError) -> list[Failure]:
    """The processes and modules an install error names (a preflight lists them all)."""
    d = e.details or {}
    rows = d.get("failures")
    if isinstance(rows, list) and rows:
        return [
            Failure(phase, "install", str(r.get("pid", "-")), str(r.get("module", "-")), e.message)
            for r in rows[:10]
        ]
    return [Failure(phase, "install", str(d.get("pid", "-")), str(d.get("module", "-")), e.message)]


def _up_modules(root: Path, new: str, old: str) -> list[str]:
    path = root / "releases" / new / "relup.toml"
    entry = read_relup(path).up_from(old) if path.exists() else None
    if entry is None:
        raise InputError(
            f"release {new} has no relup from {old}: run `relhandler relup --to {new} "
            f"--from {old}` and rebuild the tarball before verifying",
            code="no_relup",
        )
    if restarts(entry.instructions):
        raise InputError(
            f"the relup from {old} to {new} restarts the node (changed dependencies or "
            f"Python): no state is carried, so there is nothing to rehearse hot; verify "
            f"rehearses hot upgrades only",
            code="verify_restart_relup",
        )
    mods: list[str] = []
    for i in entry.instructions:
        if isinstance(i, tuple | list) and i and i[0] == "code_change":
            mods.extend(m for m, _extra in i[-1] if m not in mods)
    return mods


def rehearse(
    old_tarball: Path,
    new_tarball: Path,
    *,
    duration: float = 2.0,
    on_line: Callable[[str], None] | None = None,
    keep_root: Path | None = None,
) -> Report:
    """Boot OLD in a temporary root, drive load, upgrade, health, downgrade, upgrade again.

    Returns the report (``report.ok`` is False on any failure); raises only for bad input
    (a tarball that is not a release, no relup between the two) or a node that cannot start.
    ``keep_root`` rehearses in that (new, empty) directory and leaves it in place.
    """
    say = on_line or (lambda _s: None)
    tmp = None
    if keep_root is None:
        tmp = Path(tempfile.mkdtemp(prefix="rh-verify-"))
        root = tmp / "root"
    else:
        root = keep_root.resolve()
    try:
        u = deploy(old_tarball.resolve(), root)
        old = u.version
        say(f"boot: starting {old} in {root}")
        try:
            start_daemon(root)
        except ReleaseError as e:
            # the root goes away with the rehearsal: say what the node's log said
            log = root / "log" / "node.log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise ReleaseError(
                f"{old} did not boot: {e.message}"
                + (f"; its log ends: {' | '.join(tail)}" if tail else ""),
                code="verify_boot_failed",
            ) from e
        try:
            return _rehearse(root, old, new_tarball.resolve(), duration, say)
        finally:
            with contextlib.suppress(RelhandlerError), Client(root, timeout=30.0) as c:
                c.call("stop")
            sock = root / "run" / "node.sock"
            deadline = time.monotonic() + 30
            while sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _rehearse(
    root: Path, old: str, new_tarball: Path, duration: float, say: Callable[[str], None]
) -> Report:
    c = Client(root, timeout=3600.0)
    with c:
        new = c.call("unpack", {"tarball": str(new_tarball)})["version"]
        if new == old:
            raise InputError(
                f"--from and --to are both release {old}; give the running release and the "
                f"one to ship"
            )
        up_mods = _up_modules(root, new, old)
        cfgs = {v: read_verify(root / "releases" / v) for v in (old, new)}
        report = Report(old, new, duration)
        report.hooks = {v: (cfg.to_toml() if cfg else None) for v, cfg in cfgs.items()}
        if not any(cfgs.values()):
            say(
                "note: neither release declares [tool.relhandler.verify]: no load and no "
                "health checks, only the installs and the round trip"
            )

        def hooks_of(vsn: str) -> VerifyConfig:
            # the running release's hooks; the other's if it declares none
            other = new if vsn == old else old
            return cfgs[vsn] or cfgs[other] or VerifyConfig()

        load = _Load(root, report)
        seen: set[tuple[str, int]] = set()

        def collect_events(ph: PhaseReport) -> None:
            """The node's events since the last phase (log/events.jsonl): counted by kind,
            and every abnormal process exit (not of verify's own rpc processes) fails."""
            for ev in read_events(root / "log"):
                key = (str(ev.get("boot")), int(ev.get("seq", 0)))
                if key in seen:
                    continue
                seen.add(key)
                kind = str(ev.get("kind"))
                ph.events[kind] = ph.events.get(kind, 0) + 1
                d = ev.get("data") or {}
                if kind == "process.exit" and d.get("initial_call") != "rpc":
                    pid = str(d.get("pid", "-"))
                    report.failures.append(
                        Failure(
                            ph.name,
                            "exit",
                            f"{pid} ({d['name']})" if d.get("name") else pid,
                            str(d.get("initial_call") or "-"),
                            f"exited with {d.get('reason')}",
                        )
                    )

        def enter(name: str, vsn: str) -> PhaseReport:
            if report.phases:
                collect_events(report.phases[-1])
            ph = PhaseReport(name, vsn)
            report.phases.append(ph)
            with load._lock:
                load.phase = ph
                load.cfg = hooks_of(vsn)
            return ph

        def run_load(ph: PhaseReport) -> None:
            say(f"{ph.name}: load on {ph.release} for {duration:g}s")
            time.sleep(duration)
            # and at least one round of the hooks, however slow the machine
            want = len(load.hooks())
            deadline = time.monotonic() + MIN_ROUND_WAIT
            while ph.calls < want and time.monotonic() < deadline:
                time.sleep(0.01)

        def install(ph: PhaseReport, vsn: str) -> bool:
            say(f"{ph.name}: installing {vsn}")
            try:
                res = c.call("install", {"version": vsn})
            except RelhandlerError as e:
                report.failures.extend(_install_failures(ph.name, e))
                return False
            with load._lock:
                load.cfg = hooks_of(vsn)
            ph.install_ms = res.get("ms")
            ph.migrated = sum(int(n) for n in (res.get("touched") or {}).values())
            ph.suspended_ms = _suspended_ms(res.get("steps") or [])
            return True

        def health(ph: PhaseReport, vsn: str) -> None:
            # the node's own health op, as confirm-or-revert runs them: a `health` event each
            checks = hooks_of(vsn).health
            if not checks:
                return
            try:
                rows = c.call("health", {"checks": list(checks)}, timeout=60 + 10 * len(checks))
                rows = rows["checks"]
            except RelhandlerError as e:
                rows = [{"check": h, "ok": False, "error": e.message} for h in checks]
            for row in rows:
                if row["ok"]:
                    ph.health_passed += 1
                else:
                    ph.health_failed += 1
                    mod = _split_mfn(row["check"])[0]
                    failure = Failure(ph.name, "health", row["check"], mod, row.get("error", ""))
                    report.failures.append(failure)
            say(f"{ph.name}: health {ph.health_passed} passed, {ph.health_failed} failed")

        load.start()
        try:
            ph = enter("boot", old)
            load.resume()
            run_load(ph)
            if report.failures:
                return report

            ph = enter("upgrade", old)
            load.pause()  # s and up(s), nothing between them
            c.call("verify_capture", {"tag": "before", "modules": up_mods})
            ok = install(ph, new)
            if ok:
                c.call("verify_capture", {"tag": "after", "modules": up_mods})
            load.resume()
            if not ok:
                return report
            ph.release = new
            run_load(ph)
            health(ph, new)

            ph = enter("downgrade", new)
            exempt = list(hooks_of(new).roundtrip_exempt)
            rows = c.call(
                "verify_roundtrip",
                {"before": "before", "after": "after", "new": new, "old": old, "exempt": exempt},
            )
            report.roundtrip = rows
            for r in rows:
                if r["result"] == "ok":
                    ph.roundtrip_ok += 1
                elif r["result"] == "exempt":
                    ph.roundtrip_exempt += 1
                else:
                    ph.roundtrip_failed += 1
                    err = r.get("error") or (
                        f"down(up(state)) != state: before {r.get('before')}, "
                        f"after up and down {r.get('after_down')}"
                    )
                    report.failures.append(
                        Failure("downgrade", "roundtrip", r["pid"], r["module"], err)
                    )
            say(
                f"downgrade: {ph.roundtrip_ok} states round-tripped, "
                f"{ph.roundtrip_failed} did not, {ph.roundtrip_exempt} exempt"
            )
            if not install(ph, old):
                return report
            ph.release = old
            run_load(ph)
            health(ph, old)

            ph = enter("upgrade-again", old)
            if not install(ph, new):
                return report
            ph.release = new
            run_load(ph)
            health(ph, new)
            return report
        finally:
            load.close()
            if report.phases:
                collect_events(report.phases[-1])
