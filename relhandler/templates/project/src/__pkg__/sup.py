"""Top supervisor: restarts the server if it crashes."""


def init(args):
    flags = {"strategy": "one_for_one", "intensity": 5, "period": 10}
    children = [
        {
            "id": "server",
            "start": ("{{pkg}}.server", "start_link", []),
            "modules": ["{{pkg}}.server"],
        }
    ]
    return ("ok", (flags, children))
