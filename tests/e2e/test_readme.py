"""The README, replayed: the tour and the CI example, run as written in a fresh, activated
venv; and the generated CLI reference is current."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def tour_blocks() -> list[str]:
    return re.findall(r"<!-- tour -->\n```sh\n(.*?)```", README, flags=re.S)


def ci_example() -> tuple[dict[str, str], list[str]]:
    """The CI example's job env and its `run:` steps, in order."""
    yaml = README.split("## In a CI pipeline")[1].split("```yaml\n")[1].split("```")[0]
    env_block = yaml.split("    env:\n")[1].split("    steps:\n")[0]
    env = {
        k: v.strip().strip('"') for k, v in re.findall(r"^\s+(\w+): (\S+)", env_block, flags=re.M)
    }
    steps = re.findall(r"^\s+- run: (.*)$", yaml, flags=re.M)
    return env, steps


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with relhandler installed from this checkout (not editable)."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv


def run_activated(
    venv: Path, script: str, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("RELHANDLER_ROOT", "VIRTUAL_ENV")}
    # the venv's activate script puts it first on PATH, as a user's shell would
    clean["PATH"] = os.pathsep.join(
        p for p in clean["PATH"].split(os.pathsep) if not p.startswith(str(REPO))
    )
    body = f"set -euo pipefail\nsource {venv}/bin/activate\n{script}"
    return subprocess.run(
        ["bash", "-c", body],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=600,
    )


def stop(venv: Path, root: Path) -> None:
    subprocess.run(
        [str(venv / "bin" / "relhandler"), "stop", "--root", str(root)],
        capture_output=True,
        timeout=60,
    )


@pytest.mark.timeout(300)  # the first test to use it also pays for the fresh venv
def test_readme_tour_runs_as_written(tmp_path: Path, fresh_venv: Path) -> None:
    blocks = tour_blocks()
    assert len(blocks) >= 3
    r = run_activated(fresh_venv, "\n".join(blocks), tmp_path)
    try:
        assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        out = r.stdout
        assert '"Hello, Ada!"' in out
        assert '"Hello again, Bob! (1 names)"' in out
        assert "\n2\n" in out  # the count survived the upgrade
        assert '"Hello, Cy!"' in out  # downgraded
    finally:
        stop(fresh_venv, tmp_path / "shop-root")


def test_readme_ci_example_runs_as_written(tmp_path: Path, fresh_venv: Path) -> None:
    """The CI example's steps against a node running 0.1.0 (the checkout holds 0.2.0)."""
    env, steps = ci_example()
    assert steps[0] == "pip install relhandler"  # the fresh venv stands for this step
    root, artefacts = tmp_path / "shop-root", tmp_path / "artefacts"
    artefacts.mkdir()
    first, second = tour_blocks()[:2]
    # the host: 0.1.0 deployed and running (the tour's first part), its tarball kept
    r = run_activated(fresh_venv, first, tmp_path)
    assert r.returncode == 0, r.stderr
    shop = tmp_path / "shop"
    try:
        shutil.copy(shop / "_build" / "rel" / "shop-0.1.0.tar.gz", artefacts)
        # the developer's commit: 0.2.0 with the appup the tour generates; CI starts clean
        dev = "\n".join(
            line
            for line in second.splitlines()
            if not re.match(r"relhandler (relup|check|upgrade|rpc|releases)", line)
        )
        r = run_activated(fresh_venv, dev, shop, RELHANDLER_ROOT=str(root))
        assert r.returncode == 0, r.stderr
        shutil.rmtree(shop / "_build")
        ci_env = {
            **env,
            "RELHANDLER_ROOT": str(root),
            "ARTEFACTS": str(artefacts),
            "GITHUB_REF_NAME": "v0.2.0",
        }
        for step in steps[1:]:
            r = run_activated(fresh_venv, step, shop, **ci_env)
            assert r.returncode == 0, f"{step}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
        r = run_activated(fresh_venv, "relhandler releases --json", shop, **ci_env)
        assert '"version": "0.2.0",\n    "status": "permanent"' in r.stdout, r.stdout
        assert (artefacts / "shop-0.2.0.tar.gz").is_file()
    finally:
        stop(fresh_venv, root)


# slow: `make test` runs the same check in its `docs` step (28 CLI start-ups)
@pytest.mark.slow
def test_cli_reference_is_current() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
