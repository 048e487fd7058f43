"""A websocket connection to the chat room (the websocket behaviour, relhandler.web).

Version 2 tags its lines ``[v2]`` and keeps ``{"who", "count"}`` per connection: an
``advanced`` update migrates the state of every open connection in ``code_change``, both
ways. ``/history`` asks the room (``sample.room``, unchanged) for its lines.
"""

__vsn__ = "2"

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
        ("text", f"[v2] #{seq} {state['who']}: {text} (you sent {count})"),
        {
            **state,
            "count": count,
        },
    )


def handle_info(msg, state):
    if msg[0] == "said":
        _, seq, nick, text = msg
        return ("reply", ("text", f"[v2] #{seq} {nick}: {text}"), state)
    return ("ok", state)


def code_change(old_vsn, state, extra):
    if isinstance(old_vsn, tuple) and old_vsn[0] == "down":
        # back to 1.0.0 (this code runs before v1's is loaded): v1's shape
        return ("ok", {"nick": state["who"], "sent": state["count"]})
    return ("ok", {"who": state["nick"], "count": state["sent"]})
