"""Run cases through the real ``systools_rc:translate_scripts/4`` in one ``erl`` process."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.unit.release.rc_cases import S

HERE = Path(__file__).parent


def erl_term(x: Any) -> str:
    """Render a Python term as Erlang text (``S`` → string, other str → atom)."""
    if isinstance(x, S):
        return json.dumps(str(x))
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, str):
        return "'" + x.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, tuple):
        return "{" + ",".join(erl_term(e) for e in x) + "}"
    if isinstance(x, list):
        return "[" + ",".join(erl_term(e) for e in x) + "]"
    raise TypeError(f"cannot render {x!r} as an Erlang term")


def from_json(x: Any) -> Any:
    if isinstance(x, dict):
        return tuple(from_json(e) for e in x["t"])
    if isinstance(x, list):
        return [from_json(e) for e in x]
    return x


def run_otp(cases: Iterable[tuple[str, str, Any, Any, Any]], erl: str) -> dict[str, Any]:
    """{id: ("ok", script) | ("error", reason)} from OTP, for all cases in one erl run."""
    with tempfile.TemporaryDirectory() as d:
        dd = Path(d)
        subprocess.run(
            ["erlc", "-o", d, str(HERE / "rc_driver.erl")], check=True, capture_output=True
        )
        terms = dd / "cases.terms"
        with terms.open("w") as f:
            for cid, mode, scripts, apps, pre in cases:
                m = "up" if mode == "up" else "dn"
                f.write(
                    "{"
                    + ",".join(
                        [erl_term(S(cid)), m, erl_term(scripts), erl_term(apps), erl_term(pre)]
                    )
                    + "}.\n"
                )
        out = subprocess.run(
            [erl, "-noshell", "-pa", d, "-run", "rc_driver", "main", str(terms)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
    results: dict[str, Any] = {}
    for line in out.stdout.splitlines():
        row = json.loads(line)
        res = from_json(row["result"])
        if res[0] == "ok":
            results[row["id"]] = ("ok", res[1])
        elif res[0] == "error":
            results[row["id"]] = ("error", res[2])
        else:
            results[row["id"]] = ("crash", res)
    return results
