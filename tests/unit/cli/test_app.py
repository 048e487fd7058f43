"""The CLI imports only the module of the command it runs; the table saying which is exact."""

from __future__ import annotations

import subprocess
import sys

from relhandler.cli._app import COMMAND_MODULES, _load_commands, registered_names


def test_command_table_names_each_command_in_the_module_that_registers_it() -> None:
    _load_commands()
    declared = {name: module for module, names in COMMAND_MODULES.items() for name in names}
    registered = registered_names()
    assert {n: registered.get(n) for n in declared} == declared
    # a command missing from the table still runs (every module is imported), only slower, so a
    # missing entry is not a failure here


def test_a_known_command_imports_only_its_own_module() -> None:
    probe = (
        "import sys; from relhandler.cli._app import _load_commands\n"
        "_load_commands(['--debug', 'ping', '--root', 'x'])\n"
        "print(sorted(m for m in sys.modules if m.endswith('_cmds')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['relhandler.cli.node_cmds']"


def test_an_unknown_or_missing_command_imports_every_module() -> None:
    probe = (
        "import sys; from relhandler.cli._app import _load_commands\n"
        "_load_commands(sys.argv[1:])\n"
        "print(sum(m.endswith('_cmds') for m in sys.modules))"
    )
    for argv in ([], ["--help"], ["no-such-command"]):
        r = subprocess.run(
            [sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True
        )
        assert int(r.stdout) == len(COMMAND_MODULES)
