"""A websocket connection to the chat room (the websocket behaviour, relhandler.web).

Version 3 tags its lines ``[v3]`` and keeps 2.0.0's state shape, ``{"who", "count"}``: a
``soft`` update (no state to migrate). ``/history`` asks the room (``sample.room``) for its
lines.
"""

__vsn__ = "3"

from urllib.parse import parse_qs

import sample.room


async def init(req, args):
    nick = parse_qs(req["query_string"]).get("nick", ["anon"])[0]
    await sample.room.join()
    return ("ok", {"who": nick, "count": 0})


async def handle_frame(frame, state):
    if frame[0] != "text":
        return ("ok", state)
    text = frame[1]
    if text == "/history":
        return ("reply", ("text", " | ".join(await sample.room.history())), state)
    seq = await sample.room.post(state["who"], text)
    count = state["count"] + 1
    return (
        "reply",
        ("text", f"[v3] #{seq} {state['who']}: {text} (you sent {count})"),
        {
            **state,
            "count": count,
        },
    )


def handle_info(msg, state):
    if msg[0] == "said":
        _, seq, nick, text = msg
        return ("reply", ("text", f"[v3] #{seq} {nick}: {text}"), state)
    return ("ok", state)


def code_change(old_vsn, state, extra):
    return ("ok", state)  # the same shape as 2.0.0's, both ways
