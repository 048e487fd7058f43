"""A GenServer's declared state type, and whether a state matches it (shallowly).

A module declares the type of its state in one of two ways (the first found wins):

* a module-level name ``State`` bound to a dataclass, a ``TypedDict`` or a pydantic model;
* the return annotation of ``init``: that type, or ``tuple[Literal["ok"], State]`` and the
  like (the first supported type among the annotation's arguments).

The release handler's preflight checks each state a ``code_change`` returns against the
declared type of the version being installed, so a ``code_change`` that forgot the new
shape refuses the install instead of losing the state at its first use. The check is
shallow, on purpose: the top-level fields and their outer types, never a walk of the data.

* dataclass: an instance of the class (or of an earlier version of it: the same module and
  qualified name), every field present, each field's value of its annotated outer type;
* ``TypedDict``: a ``dict`` holding every required key, each present key's value of its
  annotated outer type;
* pydantic model: an instance of the model, else ``model_validate`` of the value.

An outer type is what ``isinstance`` can test: ``list[int]`` is checked as a list, an
``Optional`` or a union as any of its members, a ``Literal`` by its values; a form this
module does not know (a ``TypeVar``, a ``Protocol``, a forward name it cannot resolve) passes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Mismatch", "check_state", "declared_state_type", "state_mismatch", "type_name"]

Kind = Literal["dataclass", "typeddict", "pydantic"]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why a state does not match its declared type: ``field`` is the top-level field or
    key (None when the state as a whole is of the wrong type)."""

    type_name: str
    field: str | None
    reason: str

    @property
    def detail(self) -> str:
        """What is wrong, without the type: ``field 'names' is missing``."""
        where = f"field {self.field!r} " if self.field is not None else ""
        return f"{where}{self.reason}"

    def __str__(self) -> str:
        return f"state does not match {self.type_name}: {self.detail}"


def _kind(t: Any) -> Kind | None:
    if not isinstance(t, type):
        return None
    if dataclasses.is_dataclass(t):
        return "dataclass"
    if typing.is_typeddict(t):
        return "typeddict"
    if callable(getattr(t, "model_validate", None)) and hasattr(t, "model_fields"):
        return "pydantic"
    return None


def type_name(t: Any) -> str:
    """``module.Qualname`` of a declared type."""
    return f"{getattr(t, '__module__', '?')}.{getattr(t, '__qualname__', repr(t))}"


def _first_supported(hint: Any) -> Any | None:
    if _kind(hint) is not None:
        return hint
    for arg in typing.get_args(hint):
        found = _first_supported(arg)
        if found is not None:
            return found
    return None


def declared_state_type(module: Any) -> Any | None:
    """The state type ``module`` declares (``State``, else ``init``'s return annotation),
    or None when it declares none this module can check."""
    ns = getattr(module, "__dict__", {})
    declared = ns.get("State")
    if _kind(declared) is not None:
        return declared
    init = ns.get("init")
    if not callable(init):
        return None
    try:
        hints = typing.get_type_hints(init, globalns=ns)
    except Exception:  # an annotation that does not resolve declares nothing checkable
        return None
    ret = hints.get("return")
    return None if ret is None else _first_supported(ret)


def _same_class(value: Any, t: type) -> bool:
    """``value`` is a ``t``, or an instance of an earlier version of ``t`` (a module loaded
    again makes a new class object with the same module and qualified name)."""
    if isinstance(value, t):
        return True
    c = type(value)
    return (c.__module__, c.__qualname__) == (t.__module__, t.__qualname__)


def _outer_ok(value: Any, hint: Any) -> bool:
    """Does ``value`` match the outer type of ``hint``? Unknown forms pass."""
    if hint is Any or hint is object:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _outer_ok(value, typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_outer_ok(value, a) for a in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin is typing.ClassVar:
        return True
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return True  # a TypeVar, a string that did not resolve, a NewType...
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if _kind(hint) == "typeddict":
        return isinstance(value, dict)
    if _kind(hint) is not None:
        return _same_class(value, hint)
    if getattr(hint, "_is_protocol", False):
        return True
    try:
        return isinstance(value, hint)
    except TypeError:
        return True


def _hints(t: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(t, include_extras=False)
    except Exception:
        return dict(getattr(t, "__annotations__", {}))


def _describe(value: Any) -> str:
    r = repr(value)
    return f"{type(value).__name__} {r if len(r) <= 40 else r[:37] + '...'}"


def _outer_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def state_mismatch(state: Any, declared: Any) -> Mismatch | None:
    """How ``state`` fails to match ``declared`` (see the module docstring), or None."""
    kind = _kind(declared)
    name = type_name(declared)
    if kind is None:
        return None
    if kind == "pydantic":
        if _same_class(state, declared) and isinstance(state, declared):
            return None
        raw = state.model_dump() if _same_class(state, declared) else state
        try:
            declared.model_validate(raw)
        except Exception as e:
            errs = getattr(e, "errors", None)
            if callable(errs):
                first = errs()[0]
                loc = first.get("loc") or ()
                return Mismatch(
                    name, str(loc[0]) if loc else None, str(first.get("msg", e)).lower()
                )
            return Mismatch(name, None, f"{type(e).__name__}: {e}")
        return None
    hints = _hints(declared)
    if kind == "typeddict":
        if not isinstance(state, Mapping):
            return Mismatch(name, None, f"expected a dict, got {_describe(state)}")
        required: frozenset[str] = getattr(declared, "__required_keys__", frozenset(hints))
        for key in hints:
            if key not in state:
                if key in required:
                    return Mismatch(name, key, "is missing")
                continue
            if not _outer_ok(state[key], hints[key]):
                return Mismatch(
                    name,
                    key,
                    f"is {_describe(state[key])}, declared {_outer_name(hints[key])}",
                )
        return None
    if not _same_class(state, declared):
        return Mismatch(name, None, f"expected a {declared.__qualname__}, got {_describe(state)}")
    for f in dataclasses.fields(declared):
        if not hasattr(state, f.name):
            return Mismatch(name, f.name, "is missing")
        hint = hints.get(f.name, Any)
        value = getattr(state, f.name)
        if not _outer_ok(value, hint):
            return Mismatch(name, f.name, f"is {_describe(value)}, declared {_outer_name(hint)}")
    return None


def check_state(module: Any, state: Any) -> Mismatch | None:
    """Does ``state`` match the state type ``module`` declares? None when it does, or when
    the module declares none (for a verification harness: the preflight's own check)."""
    declared = declared_state_type(module)
    return None if declared is None else state_mismatch(state, declared)
