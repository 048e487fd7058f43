"""Top supervisor: the visit counter, then the web listeners the app env declares."""

from relhandler import web


def init(args):
    flags = {"strategy": "one_for_one", "intensity": 5, "period": 10}
    children = [
        {
            "id": "visits",
            "start": ("{{pkg}}.visits", "start_link", []),
            "modules": ["{{pkg}}.visits"],
        },
        web.child_spec("{{pkg}}"),
    ]
    return ("ok", (flags, children))
