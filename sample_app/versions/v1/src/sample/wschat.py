"""A websocket connection to the chat room (the websocket behaviour, relhandler.web).

One connection process per client, whose callbacks run the module's *current* version for
every frame: after an upgrade an open connection answers in the new format, its
per-connection state migrated by ``code_change``. ``/history`` asks the room for its lines.
Version 1 keeps ``{"nick", "sent"}`` per connection.
"""

__vsn__ = "1"

from urllib.parse import parse_qs

import sample.room


async def init(req, args):
    nick = parse_qs(req["query_string"]).get("nick", ["anon"])[0]
    await sample.room.join()
    return ("ok", {"nick": nick, "sent": 0})


async def handle_frame(frame, state):
    if frame[0] != "text":
        return ("ok", state)
    text = frame[1]
    if text == "/history":
        return ("reply", ("text", " | ".join(await sample.room.history())), state)
    seq = await sample.room.post(state["nick"], text)
    sent = state["sent"] + 1
    return (
        "reply",
        ("text", f"#{seq} {state['nick']}: {text} (you sent {sent})"),
        {
            **state,
            "sent": sent,
        },
    )


def handle_info(msg, state):
    if msg[0] == "said":  # another member's line
        _, seq, nick, text = msg
        return ("reply", ("text", f"#{seq} {nick}: {text}"), state)
    return ("ok", state)


def code_change(old_vsn, state, extra):
    return ("ok", state)
