"""relhandler.web tests: the e2e node fixtures are shared with tests/e2e."""

from tests.e2e.conftest import nodes

__all__ = ["nodes"]
