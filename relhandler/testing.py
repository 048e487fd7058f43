"""``relhandler.testing``: unit-test an upgrade with pytest.

Loaded by pytest as a plugin when relhandler is installed (entry point ``pytest11``). It
gives:

* the ``relhandler_node`` fixture, a factory that boots a real node from a built release
  tarball in a temporary root and stops it after the test (:class:`TestNode`: ``upgrade``,
  ``downgrade``, ``state``, ``rpc``, ``call``, ``releases``);
* :func:`assert_code_change_roundtrip`, which runs a module's ``code_change`` up and then
  down over given states, or over states drawn from a Hypothesis strategy, and fails on the
  first state (shrunk, with a strategy) that does not come back equal.

Importing this module is cheap and does nothing: everything it needs is imported when a
fixture or a helper is used.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import shutil
import signal
import tempfile
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "RoundtripError",
    "TestNode",
    "assert_code_change_roundtrip",
    "relhandler_node",
]


class RoundtripError(AssertionError):
    """A state that ``code_change`` up then down did not give back (or that made it raise)."""

    def __init__(self, message: str, *, state: Any) -> None:
        super().__init__(message)
        self.state = state


# -- code_change round trip -------------------------------------------------------------


def _run(r: Any) -> Any:
    if inspect.isawaitable(r):
        import asyncio

        async def wait() -> Any:
            return await r

        return asyncio.run(wait())
    return r


def _statem(fn: Callable[..., Any]) -> bool:
    """gen_statem's ``code_change(old_vsn, state, data, extra)`` takes four arguments."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) == 4


def _diff(before: Any, after: Any) -> str:
    if isinstance(before, dict) and isinstance(after, dict):
        parts = []
        lost = [k for k in before if k not in after]
        added = [k for k in after if k not in before]
        changed = [k for k in before if k in after and before[k] != after[k]]
        if lost:
            parts.append(f"lost keys {lost!r}")
        if added:
            parts.append(f"new keys {added!r}")
        if changed:
            parts.append(f"changed keys {changed!r}")
        if parts:
            return "; " + ", ".join(parts)
    return ""


def _one(
    name: str,
    fn: Callable[..., Any],
    state: Any,
    from_vsn: Any,
    extra_up: Any,
    extra_down: Any,
) -> None:
    from relhandler.runtime.statecopy import copy_state

    statem = _statem(fn)

    def step(direction: str, vsn: Any, s: Any, extra: Any) -> Any:
        try:
            if statem:
                r = _run(fn(vsn, *copy_state(s), extra))
                ok = isinstance(r, tuple) and len(r) == 3 and r[0] == "ok"
                out = (r[1], r[2]) if ok else None
            else:
                r = _run(fn(vsn, copy_state(s), extra))
                ok = isinstance(r, tuple) and len(r) == 2 and r[0] == "ok"
                out = r[1] if ok else None
        except Exception as e:
            raise RoundtripError(
                f"{name}.code_change {direction} raised {type(e).__name__}: {e} on state {s!r}",
                state=state,
            ) from e
        if not ok:
            want = "('ok', state, data)" if statem else "('ok', new_state)"
            raise RoundtripError(
                f"{name}.code_change {direction} returned {r!r} for state {s!r}; expected {want}",
                state=state,
            )
        return out

    up = step("up", from_vsn, state, extra_up)
    down = step("down", ("down", from_vsn), up, extra_down)
    if down != state:
        raise RoundtripError(
            f"{name}: code_change up then down does not give back the state: {state!r} → up "
            f"{up!r} → down {down!r}{_diff(state, down)}",
            state=state,
        )


def assert_code_change_roundtrip(
    module: types.ModuleType | str,
    states: Iterable[Any] | Any,
    *,
    from_vsn: Any,
    extra: Any = None,
    extra_down: Any = None,
    max_examples: int = 200,
) -> None:
    """Check ``down(up(s)) == s`` for each state ``s`` of the old version.

    ``module`` is the new version's module (or its dotted name): its ``code_change`` is
    called with ``from_vsn`` (the old module version, as the upgrade passes it) and ``extra``
    (the appup's ``extra`` for the way up), then with ``("down", from_vsn)`` and
    ``extra_down`` (default: ``extra``) over what it returned. Each call gets a copy of its
    state. A gen_statem's ``code_change(old_vsn, state, data, extra)`` is recognised by its
    four arguments; its states are ``(state, data)`` pairs. An async ``code_change`` is run
    to completion.

    ``states`` is an iterable of old states, or a Hypothesis strategy of them: Hypothesis
    then draws up to ``max_examples`` states and shrinks the first failure. Raises
    :class:`RoundtripError` (an ``AssertionError``) naming the first state that does not
    come back equal (or that makes ``code_change`` raise) and what became of it.
    """
    mod = importlib.import_module(module) if isinstance(module, str) else module
    name = mod.__name__
    fn = getattr(mod, "code_change", None)
    if not callable(fn):
        raise TypeError(f"{name} has no code_change to round-trip")
    down_extra = extra if extra_down is None else extra_down
    if _is_strategy(states):
        from hypothesis import HealthCheck, Phase, given, settings

        strategy: Any = states

        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            # the report names the shrunk state itself: no explain phase (it reruns examples)
            phases=[p for p in Phase if p.name != "explain"],
        )
        @given(strategy)
        def roundtrip(state: Any) -> None:
            _one(name, fn, state, from_vsn, extra, down_extra)

        roundtrip()
        return
    for state in states:
        _one(name, fn, state, from_vsn, extra, down_extra)


def _is_strategy(x: Any) -> bool:
    # no Hypothesis import unless one is likely in use: the class lives in its package
    return any(
        c.__module__.startswith("hypothesis.") and c.__name__ == "SearchStrategy"
        for c in type(x).__mro__
    )


# -- a node for a test ------------------------------------------------------------------


@dataclass
class TestNode:
    """A node booted from a release tarball in a temporary root, as ``start --daemon`` does;
    talk to it over its real control socket."""

    __test__ = False  # not a test class, whatever pytest's name rules say

    root: Path
    version: str
    _tmp: Path | None = field(default=None, repr=False)

    def op(self, op: str, args: dict[str, Any] | None = None, timeout: float = 120.0) -> Any:
        """One control request (``status``, ``install``, ``releases``...); raises relhandler's
        error for a refusal."""
        from relhandler.control.client import Client

        with Client(self.root, timeout=timeout) as c:
            return c.call(op, args or {}, timeout=timeout)

    def rpc(self, module: str, function: str, *args: Any) -> Any:
        """``module.function(*args)`` on the node, in a fresh process (JSON in and out)."""
        return self.op("rpc", {"module": module, "function": function, "args": list(args)})

    def call(self, name: str, request: Any) -> Any:
        """``gen_server.call(name, request)`` on the node; arrays in ``request`` are tuples."""
        return self.op("verify_call", {"name": name, "request": request})

    def state(self, process: str) -> Any:
        """The state of a behaviour process (a registered name), as JSON carries it."""
        return self.rpc("relhandler.runtime.sys", "get_state", process)

    def upgrade(self, tarball: Path | str) -> dict[str, Any]:
        """Unpack a release next to the running one and install it (not made permanent)."""
        u = self.op("unpack", {"tarball": str(Path(tarball).resolve())})
        return self.install(u["version"])

    def downgrade(self, version: str) -> dict[str, Any]:
        """Install an older release (through the relup's down entry)."""
        return self.install(version)

    def install(self, version: str) -> dict[str, Any]:
        res: dict[str, Any] = self.op("install", {"version": version}, timeout=600.0)
        self.version = version
        return res

    def releases(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.op("releases")
        return rows

    def stop(self) -> None:
        """Stop the node (in order; SIGKILL if it does not go within 30 s), remove the root."""
        from relhandler.errors import RelhandlerError

        sock = self.root / "run" / "node.sock"
        pid_file = self.root / "run" / "node.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        if sock.exists():
            with contextlib.suppress(RelhandlerError, OSError):
                self.op("stop", timeout=10.0)
            deadline = time.monotonic() + 30
            while sock.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        if pid is not None and sock.exists():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def boot(tarball: Path | str) -> TestNode:
    """Deploy ``tarball`` into a new temporary root and start its node; the caller stops it.

    The root is under the system temp dir (short: a control socket path has a length limit)."""
    from relhandler.control.daemon import start_daemon
    from relhandler.handler.unpack import deploy

    tmp = Path(tempfile.mkdtemp(prefix="rh-test-"))
    root = tmp / "root"
    try:
        u = deploy(Path(tarball).resolve(), root)
        start_daemon(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TestNode(root, u.version, tmp)


@pytest.fixture
def relhandler_node() -> Iterator[Callable[[Path | str], TestNode]]:
    """A factory: ``relhandler_node(tarball)`` boots a node from a built release in a
    temporary root and returns its :class:`TestNode`; every node it booted is stopped, and
    its root removed, when the test ends."""
    nodes: list[TestNode] = []

    def factory(tarball: Path | str) -> TestNode:
        n = boot(tarball)
        nodes.append(n)
        return n

    yield factory
    for n in nodes:
        n.stop()
