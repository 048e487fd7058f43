"""Listener tables: good ones parse, bad ones name the field and the fix."""

from __future__ import annotations

import pytest

from relhandler.errors import ConfigError
from relhandler.web.config import ListenerConfig, parse_listeners


def test_defaults_follow_uvicorn() -> None:
    (c,) = parse_listeners([{"name": "http", "app": "shop.site:api"}], "shop")
    assert c == ListenerConfig(name="http", app="shop.site:api")
    assert (c.module, c.attr) == ("shop.site", "api")
    assert (c.keep_alive_timeout, c.max_header_bytes, c.ws_max_size) == (5.0, 16384, 1 << 24)
    (h,) = parse_listeners([{"name": "ws", "handler": "shop.room", "port": 9000}], "shop")
    assert (h.module, h.port, h.app) == ("shop.room", 9000, None)
    assert parse_listeners(None, "shop") == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("http", "must be a list of tables"),
        (["x"], "must be a table"),
        ([{"app": "a:app"}], "needs a 'name'"),
        ([{"name": "h"}], "set exactly one of 'app'"),
        ([{"name": "h", "app": "a:app", "handler": "b"}], "set exactly one of 'app'"),
        ([{"name": "h", "app": "a:app", "prot": 1}], "unknown keys ['prot']"),
        ([{"name": "h", "app": "a:app", "port": 70000}], "'port' must be an integer 0..65535"),
        ([{"name": "h", "app": "a:app", "keep_alive_timeout": -1}], "'keep_alive_timeout'"),
        ([{"name": "h", "app": "a:app", "certfile": "c.pem"}], "needs both 'certfile'"),
        ([{"name": "h", "app": 3}], "'app' must be a module name"),
        ([{"name": "h", "app": "a:app"}, {"name": "h", "handler": "b"}], "duplicate listener"),
    ],
)
def test_bad_tables_are_refused_with_the_field(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_listeners(raw, "shop")
    assert message in str(e.value)
    assert "application 'shop' env 'listeners'" in str(e.value)
    assert e.value.code == "web_listener" and e.value.exit_code == 2


def test_unreadable_tls_files_are_a_config_error(tmp_path) -> None:
    c = ListenerConfig(
        name="h", app="a:app", certfile=str(tmp_path / "no.pem"), keyfile=str(tmp_path / "k")
    )
    with pytest.raises(ConfigError) as e:
        c.ssl_context()
    assert e.value.code == "web_tls" and "no.pem" in str(e.value)
