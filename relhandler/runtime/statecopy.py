"""Copy a process state by value, plain data only: ``copy_state(x) -> x'``.

The preflight runs each ``code_change`` on a copy of a live state, and a rollback keeps a
copy of the states it may have to put back. Both must never touch what the live process
owns: a copied socket, stream writer or fd wrapper has a finalizer that would close or
write to the *live* resource when the copy is collected. So the copy is an allow-list:

* copied, all the way down: ``dict``, ``list``, ``tuple``, ``set``, ``frozenset``,
  ``collections.deque``/``OrderedDict``/``defaultdict``/``Counter``, named tuples,
  ``types.SimpleNamespace``, dataclass instances, pydantic (v2) models and attrs instances
  (their fields copied by the same rules); ``bytearray`` and ``array.array`` (buffers);
* returned as they are, because they are immutable values: ``str``, ``bytes``, ``int``,
  ``float``, ``complex``, ``bool``, ``None``, ``range``, ``Enum`` members, ``Decimal``,
  ``Fraction``, ``datetime``/``date``/``time``/``timedelta``, ``UUID``, paths, pids;
* **everything else is shared untouched** (the same object in the copy): sockets, stream
  writers, tasks, locks, files, and any class nobody registered. So is a dataclass, pydantic
  or attrs instance whose class defines ``__del__``: its copy's finalizer would act on the
  live resource.

Shared and cyclic references inside the state stay shared and cyclic in the copy. Extend
the list with :func:`register_copier`::

    register_copier(Money, lambda m, copy: m)                  # an immutable value
    register_copier(Grid, lambda g, copy: Grid(copy(g.cells)))  # copy what it holds
"""

from __future__ import annotations

import array
import collections
import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import pathlib
import sys
import types
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from relhandler.runtime._kernel import Pid

__all__ = ["copy_state", "register_copier"]

T = TypeVar("T")
Copier = Callable[[Any, Callable[[Any], Any]], Any]
_Handler = Callable[[Any, dict[int, Any]], Any]

_IMMUTABLE: frozenset[type] = frozenset(
    {
        int,
        float,
        complex,
        str,
        bytes,
        bool,
        type(None),
        range,
        Pid,
        decimal.Decimal,
        fractions.Fraction,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
        uuid.UUID,
        pathlib.PurePosixPath,
        pathlib.PosixPath,
        pathlib.PureWindowsPath,
        type(Ellipsis),
    }
)

_registered: dict[type, Copier] = {}
# per exact type: how to copy it (filled lazily; cleared when a copier is registered)
_dispatch: dict[type, _Handler] = {}


def copy_state(x: T) -> T:
    """A copy of ``x`` in which plain data is copied and everything else is shared."""
    return _copy(x, {})  # type: ignore[no-any-return]


def register_copier(cls: type[T], copier: Callable[[T, Callable[[Any], Any]], T]) -> None:
    """Copy instances of ``cls`` (and its subclasses) with ``copier(obj, copy)``.

    ``copy`` copies a nested value by the same rules (keeping shared references shared);
    return ``obj`` itself for an immutable value type. Registered copiers win over the
    built-in rules, so a dataclass that needs special care can be registered too.
    """
    _registered[cls] = copier
    _dispatch.clear()


def _copy(x: Any, memo: dict[int, Any]) -> Any:
    t = type(x)
    if t in _IMMUTABLE:
        return x
    i = id(x)
    if i in memo:
        return memo[i]
    h = _dispatch.get(t)
    if h is None:
        h = _dispatch[t] = _handler_for(t)
    return h(x, memo)


def _share(x: Any, memo: dict[int, Any]) -> Any:
    return x


def _dict(x: dict[Any, Any], memo: dict[int, Any]) -> Any:
    y: dict[Any, Any] = {}
    memo[id(x)] = y
    for k, v in x.items():
        y[_copy(k, memo)] = _copy(v, memo)
    return y


def _list(x: list[Any], memo: dict[int, Any]) -> Any:
    y: list[Any] = []
    memo[id(x)] = y
    y.extend([_copy(v, memo) for v in x])
    return y


def _collection(x: Any, memo: dict[int, Any]) -> Any:
    # tuple, set, frozenset: built from their copied items (a tuple holding itself
    # through a list comes back as the copy of the list holding the original tuple's copy)
    y = type(x)([_copy(v, memo) for v in x])
    memo[id(x)] = y
    return y


def _namedtuple(x: Any, memo: dict[int, Any]) -> Any:
    y = type(x)._make([_copy(v, memo) for v in x])
    memo[id(x)] = y
    return y


def _deque(x: collections.deque[Any], memo: dict[int, Any]) -> Any:
    y: collections.deque[Any] = collections.deque(maxlen=x.maxlen)
    memo[id(x)] = y
    y.extend([_copy(v, memo) for v in x])
    return y


def _mapping_subclass(x: Any, memo: dict[int, Any]) -> Any:
    # OrderedDict, defaultdict, Counter: same type, same default factory, copied items
    y = type(x)(x.default_factory) if isinstance(x, collections.defaultdict) else type(x)()
    memo[id(x)] = y
    for k, v in x.items():
        y[_copy(k, memo)] = _copy(v, memo)
    return y


def _buffer(x: Any, memo: dict[int, Any]) -> Any:
    y = copy.copy(x)  # bytearray, array.array: a flat buffer of scalars
    memo[id(x)] = y
    return y


def _fill_record(x: Any, y: Any, names: list[str], memo: dict[int, Any]) -> Any:
    memo[id(x)] = y
    setattr_ = object.__setattr__  # frozen classes refuse their own __setattr__
    done = set()
    for n in names:
        try:
            v = getattr(x, n)
        except AttributeError:
            continue  # an unset slot
        setattr_(y, n, _copy(v, memo))
        done.add(n)
    d = getattr(x, "__dict__", None)
    if isinstance(d, dict):
        for n, v in d.items():
            if n not in done:
                setattr_(y, n, _copy(v, memo))
    return y


def _namespace(x: types.SimpleNamespace, memo: dict[int, Any]) -> Any:
    return _fill_record(x, types.SimpleNamespace(), [], memo)  # its __dict__ is all it has


def _dataclass(x: Any, memo: dict[int, Any]) -> Any:
    t: Any = type(x)
    names = [f.name for f in dataclasses.fields(x)]
    return _fill_record(x, t.__new__(t), names, memo)


def _attrs(x: Any, memo: dict[int, Any]) -> Any:
    t: Any = type(x)
    names = [a.name for a in t.__attrs_attrs__]
    return _fill_record(x, t.__new__(t), names, memo)


def _pydantic(x: Any, memo: dict[int, Any]) -> Any:
    # the model's own shallow copy (new __dict__, fields-set, extra and private dicts),
    # then every value replaced by its copy: no validator or user code runs
    y = x.model_copy()
    memo[id(x)] = y
    for attr in ("__dict__", "__pydantic_extra__", "__pydantic_private__"):
        d = getattr(y, attr, None)
        if isinstance(d, dict):
            for k, v in list(d.items()):
                d[k] = _copy(v, memo)
    return y


def _registered_handler(copier: Copier) -> _Handler:
    def run(x: Any, memo: dict[int, Any]) -> Any:
        y = copier(x, lambda v: _copy(v, memo))
        memo[id(x)] = y
        return y

    return run


def _has_finalizer(t: type) -> bool:
    return any("__del__" in vars(c) for c in t.__mro__ if c is not object)


def _is_pydantic(t: type) -> bool:
    pyd = sys.modules.get("pydantic")
    base = getattr(pyd, "BaseModel", None) if pyd is not None else None
    return isinstance(base, type) and issubclass(t, base)


def _handler_for(t: type) -> _Handler:
    for c in t.__mro__:
        if c in _registered:
            return _registered_handler(_registered[c])
    if t is dict:
        return _dict
    if t is list:
        return _list
    if t is tuple or t is set or t is frozenset:
        return _collection
    if issubclass(t, enum.Enum) or issubclass(t, pathlib.PurePath):
        return _share  # values: an enum member is a singleton, a path is immutable
    if t is collections.deque:
        return _deque
    if t is bytearray or t is array.array:
        return _buffer
    if t is types.SimpleNamespace:
        return _namespace
    if t in (collections.OrderedDict, collections.defaultdict, collections.Counter):
        return _mapping_subclass
    if issubclass(t, tuple) and hasattr(t, "_fields") and hasattr(t, "_make"):
        return _namedtuple
    if _has_finalizer(t):
        return _share  # a copy's __del__ would act on what the live object owns
    if dataclasses.is_dataclass(t):
        return _dataclass
    if hasattr(t, "__attrs_attrs__"):
        return _attrs
    if _is_pydantic(t):
        return _pydantic
    return _share
