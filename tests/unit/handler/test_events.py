"""The event log's writer and reader (handler/events.py), in process: rotation, a full disk,
torn lines, --since, and the shipped schema."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from relhandler.errors import UsageError
from relhandler.handler import events as ev
from relhandler.handler.events import EventLog, follow_events, parse_since, read_events

VALIDATOR = jsonschema.Draft202012Validator(ev.schema())


def lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_every_kind_is_in_the_schema_and_only_those() -> None:
    jsonschema.Draft202012Validator.check_schema(ev.schema())
    s = ev.schema()
    assert s["properties"]["kind"]["enum"] == list(ev.KINDS)
    assert [b["if"]["properties"]["kind"]["const"] for b in s["allOf"]] == list(ev.KINDS)


def test_an_event_is_one_line_with_the_envelope(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log", release=lambda: "1.0.0")
    log.emit("make_permanent", version="1.0.0", ok=True)
    [e] = lines(tmp_path / "log" / "events.jsonl")
    assert e["v"] == 1 and e["seq"] == 1 and e["kind"] == "make_permanent"
    assert e["release"] == "1.0.0" and e["data"] == {"version": "1.0.0", "ok": True}
    assert e["time"].endswith("Z") and e["boot"] == log.boot
    VALIDATOR.validate(e)
    assert oct((tmp_path / "log" / "events.jsonl").stat().st_mode & 0o777) == "0o600"


def test_schema_rejects_a_malformed_event(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    good = log.emit("install.end", version="2", **{"from": "1"}, outcome="installed", ms=1.0)
    VALIDATOR.validate(good)
    for bad in (
        {**good, "v": 2},
        {**good, "extra": 1},
        {**good, "data": {"version": "2", "from": "1", "outcome": "done", "ms": 1.0}},
        {**good, "data": {"version": "2", "outcome": "installed", "ms": 1.0}},
        {**good, "kind": "install.finished"},
    ):
        assert not VALIDATOR.is_valid(bad), bad


def test_rotation_keeps_n_files_and_reading_is_oldest_first(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_bytes=2048, files=3)
    for i in range(200):
        log.emit("health", version="1", check="m:f", ok=True, ms=float(i))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    assert all(p.stat().st_size < 2048 + 300 for p in tmp_path.iterdir())
    seqs = [e["seq"] for e in read_events(tmp_path)]
    assert seqs == sorted(seqs) and seqs[-1] == 200
    assert seqs == list(range(seqs[0], 201))  # the newest files, nothing missing in between


def test_a_full_disk_is_swallowed_counted_and_reported_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = EventLog(tmp_path)
    log.emit("node.start", os_pid=1, release="1")
    real = os.write
    full = True

    calls = 0

    def write(fd: int, data: Any) -> int:
        nonlocal calls
        calls += 1
        if full:
            # the first time 10 bytes get out, then the disk is full: the line is torn, and
            # the next event must start on a line of its own
            if calls == 1:
                return real(fd, bytes(data)[:10])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    for _ in range(3):
        log.emit("make_permanent", version="2", ok=True)  # does not raise
    assert (log.dropped, log.written) == (3, 1)
    full = False
    log.emit("remove", version="1", ok=True)
    got = list(read_events(tmp_path))
    assert [e["kind"] for e in got] == ["node.start", "events.lost", "remove"]
    assert got[1]["data"] == {"count": 3}
    assert log.status()["dropped"] == 3
    for e in got:
        VALIDATOR.validate(e)


def test_a_removed_log_directory_is_recreated(tmp_path: Path) -> None:
    d = tmp_path / "log"
    log = EventLog(d)
    log.emit("node.start", os_pid=1, release="1")
    (d / "events.jsonl").unlink()
    d.rmdir()
    log.emit("remove", version="1", ok=True)  # EBADF/ENOENT? the fd still points at the inode
    log.close()
    log.emit("remove", version="2", ok=True)
    assert [e["data"]["version"] for e in read_events(d)] == ["2"]


def test_an_unencodable_value_keeps_the_event(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    cyc: list[Any] = []
    cyc.append(cyc)
    log.emit("health", version="1", check="m:f", ok=False, ms=0.0, error=cyc)
    [e] = read_events(tmp_path)
    assert e["kind"] == "health" and "unencodable" in e["data"]


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    log.emit("node.start", os_pid=1, release="1")
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('{"kind": "x", "v"\nnot json\n[1]\n')
    log.emit("node.stop", exit_code=0, restart=False)
    assert [e["kind"] for e in read_events(tmp_path)] == ["node.start", "node.stop"]


def test_follow_reads_through_rotation(tmp_path: Path) -> None:
    log = EventLog(tmp_path, max_bytes=1024, files=100)
    log.emit("node.start", os_pid=1, release="1")
    seen: list[int] = []
    done = threading.Event()

    def reader() -> None:
        for e in follow_events(tmp_path, poll=0.01, stop=done.is_set):
            seen.append(e["seq"])

    t = threading.Thread(target=reader)
    t.start()
    for i in range(60):
        log.emit("health", version="1", check="m:f", ok=True, ms=float(i))
    deadline = 1000
    while len(seen) < 61 and deadline:
        deadline -= 1
        done.wait(0.02)
    done.set()
    t.join(5)
    assert len(list(tmp_path.glob("events.jsonl.*"))) >= 3
    # nothing lost, nothing twice (a line read torn while it was being written can come
    # late, when its file is read again after a rotation: see follow_events)
    assert sorted(seen) == list(range(1, 62)) and len(seen) == 61


def test_since_filters_by_time(tmp_path: Path) -> None:
    log = EventLog(tmp_path)
    a = log.emit("node.start", os_pid=1, release="1")
    b = log.emit("node.stop", exit_code=0, restart=False)
    assert [e["seq"] for e in read_events(tmp_path, since=b["ts"])] == [b["seq"]]
    assert [e["seq"] for e in read_events(tmp_path, since=a["ts"] - 1)] == [1, 2]


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", NOW - 90),
        ("10m", NOW - 600),
        ("2h", NOW - 7200),
        ("1.5d", NOW - 1.5 * 86400),
        ("1700000000", 1_700_000_000.0),
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15T08:00:00", NOW),
        ("2027-01-15T09:00:00+01:00", NOW),
    ],
    ids=["seconds", "minutes", "hours", "days", "unix", "iso-z", "iso-naive-utc", "iso-offset"],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "10 minutes", "-5m", ""])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(UsageError, match=r"--since .*use a duration"):
        parse_since(text, now=NOW)


@pytest.mark.parametrize(
    ("env", "value"),
    [("RELHANDLER_EVENTS_MAX_BYTES", "10"), ("RELHANDLER_EVENTS_FILES", "zero")],
)
def test_bad_log_options_are_refused(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(Exception, match=env):
        ev.log_options()
