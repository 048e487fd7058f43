"""Application start: the top supervisor."""

from relhandler.runtime import supervisor


async def start():
    return await supervisor.start_link("sample.sup", None, name="sample_sup")
