"""Every error code exits by the README's table: 1 the operation failed, 2 bad input (a file,
an argument, a release the node cannot take as given), 3 node unreachable.

The codes come from docs/reference/errors.md, which scripts/cli_reference.py generates from
every raise in the package (tests/e2e/test_readme.py checks it is current): a new code fails
here until it is given its class below.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ERRORS_DOC = REPO / "docs" / "reference" / "errors.md"

FAILED, INPUT, UNREACHABLE = 1, 2, 3

# what each code means for the user: the class of its exit code
EXPECTED: dict[str, int] = {
    # bad input: fix a file or an argument, nothing was changed
    "appup": INPUT,
    "bad_input": INPUT,
    "bad_tarball": INPUT,
    "config": INPUT,
    "insecure_permissions": INPUT,
    "weak_cookie": INPUT,
    "no_appup": INPUT,
    "no_relup": INPUT,
    "relup": INPUT,
    "translate": INPUT,
    "usage": INPUT,
    "root_path_too_long": INPUT,
    "web_listener": INPUT,
    "web_tls": INPUT,
    "release_input": INPUT,
    "no_such_file": INPUT,  # a tarball or a module file that is not there
    "no_such_release": INPUT,  # a version that is not unpacked: unpack it
    "existing_release": INPUT,  # the version is there with other content: remove or renumber
    "lib_dir_conflict": INPUT,  # an app dir with the same version and other content
    "already_deployed": INPUT,  # deploy onto a root that has releases: use unpack/upgrade
    "no_matching_relup": INPUT,  # the release has no relup for this path: run relup
    "bad_lib_vsn": INPUT,  # the relup names an app version the release does not have
    "illegal_instruction_after_point_of_no_return": INPUT,  # a hand-written relup
    "missing_import": INPUT,  # the app imports a package the release does not bundle
    "equal_version": INPUT,
    "dep_conflict": INPUT,  # a bundled dependency at another version than the node's
    "no_session": INPUT,
    "verify_restart_relup": INPUT,  # nothing hot to rehearse
    # the operation failed or the node said no (rolled back, refused, check problems)
    "already_installed": FAILED,
    "already_running": FAILED,
    "apply_failed": FAILED,
    "bad_status": FAILED,
    "code_change_failed": FAILED,
    "install_failed": FAILED,
    "io_error": FAILED,
    "old_processes": FAILED,
    "preflight_failed": FAILED,
    "preflight_timeout": FAILED,
    "python_mismatch": FAILED,
    "release": FAILED,
    "rollback_failed": FAILED,
    "stop_timeout": FAILED,
    "restart_failed": FAILED,
    "verify_boot_failed": FAILED,
    "confirm_failed": FAILED,
    "confirm_pending": FAILED,  # the node holds a release for confirmation
    "not_pending": FAILED,
    "reverted": FAILED,  # not confirmed in its window: the node went back
    "suspend_timeout": FAILED,
    "error": FAILED,
    "internal": FAILED,
    "protocol": FAILED,
    "unknown_op": FAILED,
    "rpc_failed": FAILED,
    "start_failed": FAILED,
    # runtime errors (code server, processes, sockets, sys): an rpc or a callback failed
    "code": FAILED,
    "load_failed": FAILED,
    "not_purged": FAILED,
    "nofile": FAILED,
    "process": FAILED,
    "noproc": FAILED,
    "timeout": FAILED,
    "exit": FAILED,
    "not_a_process": FAILED,
    "socket": FAILED,
    "closed": FAILED,
    "einval": FAILED,
    "emsgsize": FAILED,
    "not_owner": FAILED,
    "sys": FAILED,
    "sys_timeout": FAILED,
    "already_started": FAILED,
    "bad_callback_mode": FAILED,
    "bad_handler": FAILED,
    "bad_return": FAILED,
    "bad_start_spec": FAILED,
    "duplicate_child_name": FAILED,
    "invalid_child_spec": FAILED,
    "invalid_child_type": FAILED,
    "invalid_intensity": FAILED,
    "invalid_mfa": FAILED,
    "invalid_modules": FAILED,
    "invalid_period": FAILED,
    "invalid_restart_type": FAILED,
    "invalid_shutdown": FAILED,
    "invalid_strategy": FAILED,
    "not_loaded": FAILED,
    "not_started": FAILED,
    "undef_state_function": FAILED,
    # the node is not there, or would not let us in
    "auth": UNREACHABLE,
    "unreachable": UNREACHABLE,
    "restart_timeout": UNREACHABLE,  # the restarted node did not come back
}


def _documented() -> dict[str, str]:
    """code → its exit code cell ("2", or "1, 2" when raised with classes that disagree)."""
    text = ERRORS_DOC.read_text()
    table = text[text.index("## Every error code") :]
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|", table, re.M)
    }


def test_every_documented_code_is_classified() -> None:
    documented = _documented()
    assert len(documented) > 50
    assert sorted(set(documented) - set(EXPECTED)) == [], "classify the new codes above"
    assert sorted(set(EXPECTED) - set(documented)) == [], "a code is gone: drop it above"


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_code_exits_by_its_class(code: str) -> None:
    assert _documented().get(code) == str(EXPECTED[code])
