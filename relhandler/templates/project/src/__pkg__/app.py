"""Application start: returns the pid of the top supervisor."""

from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("{{pkg}}.sup", None, name="{{pkg}}_sup")
