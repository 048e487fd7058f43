"""Application start: returns the pid of the top supervisor."""

from relhandler import web
from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("{{pkg}}.sup", None, name="{{pkg}}_sup")


async def port():
    """The HTTP listener's port (`relhandler rpc {{pkg}}.app:port '[]'`)."""
    return await web.port("{{pkg}}", "http")
