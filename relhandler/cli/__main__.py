"""`python -m relhandler.cli`: the same as the `relhandler` console script."""

from __future__ import annotations

from relhandler.cli import main

main()
