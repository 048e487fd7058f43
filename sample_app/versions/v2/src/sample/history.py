"""Formatting of the counter's history (new in 2.0.0)."""


def describe(history):
    return f"{len(history)} increments, last {history[-3:]}"
