"""check's warning for a module that builds on a changed module's classes when it loads
(docs/references.md, "What a module built from another module's classes")."""

from __future__ import annotations

import textwrap

from relhandler.release.builders import Builder, Changed, changed_module, stale_builders

MODELS_V1 = (
    b"import pydantic\nclass Item(pydantic.BaseModel):\n    name: str\n"
    b"def tag():\n    return 1\ndef same():\n    return 0\n"
)
MODELS_V2 = MODELS_V1.replace(b"return 1", b"return 2")

BUILDER = textwrap.dedent(
    """
    from __future__ import annotations
    import dataclasses
    import functools
    import pydantic
    from app import models
    from app.models import Item
    from . import models as m2

    class Cart(pydantic.BaseModel):
        items: list[Item]
        other: "models.Item | None" = None

    class Special(m2.Item):
        pass

    @functools.singledispatch
    def kind(x):
        return "other"

    @kind.register
    def _(x: models.Item):
        return "item"

    TABLE = {"tag": models.tag, "same": models.same, "lazy": lambda: models.Item}

    @dataclasses.dataclass
    class Lazy:  # future annotations, no base: its field types stay strings
        item: models.Item

    def at_run_time(x):
        return isinstance(x, models.Item), models.Item(name="x"), models.tag()
    """
).encode()


def test_changed_module_lists_its_classes_and_changed_functions() -> None:
    assert changed_module(MODELS_V1, MODELS_V2) == Changed(frozenset({"Item"}), frozenset({"tag"}))
    assert changed_module(b"def (", MODELS_V2) is None


def test_each_load_time_use_of_a_changed_module_is_reported_with_its_line() -> None:
    c = changed_module(MODELS_V1, MODELS_V2)
    assert c is not None
    got = stale_builders(
        "app.builder",
        BUILDER,
        is_package=False,
        changed={"app.models": c},
        modules=frozenset({"app", "app.models", "app.builder"}),
    )
    assert [(b.line, b.name, b.how) for b in got] == [
        (11, "Item", "a field type"),
        (12, "Item", "a field type"),  # a string annotation, resolved as pydantic would
        (14, "Item", "a base class"),
        (22, "Item", "a registration"),
        (25, "tag", "a value made at load"),  # 'same' did not change; the lambda runs later
    ]
    assert all(b.module == "app.builder" and b.source == "app.models" for b in got)
    assert isinstance(got[0], Builder)


def test_nothing_to_report_when_the_module_is_not_changed_or_used_at_run_time_only() -> None:
    c = changed_module(MODELS_V1, MODELS_V2)
    assert c is not None
    mods = frozenset({"app", "app.models", "app.builder"})
    assert stale_builders("app.builder", BUILDER, is_package=False, changed={}, modules=mods) == []
    runtime_only = b"from app import models\n\ndef f(x):\n    return models.Item(name=x)\n"
    assert (
        stale_builders(
            "app.builder", runtime_only, is_package=False, changed={"app.models": c}, modules=mods
        )
        == []
    )
