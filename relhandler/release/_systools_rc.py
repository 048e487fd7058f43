"""OTP's ``systools_rc`` translation, pass for pass, over Erlang-shaped terms.

Terms mirror Erlang: atoms and strings are ``str``, tuples are ``tuple``, lists are ``list``.
The passes and their order follow OTP 25's ``systools_rc.erl`` exactly (otp/semantics.md §3),
because the order decides which error wins. The only deliberate difference: where the
dependency order leaves a tie, OTP's choice falls out of ETS hash order inside
``digraph_utils:topsort``; we break ties by the order the instructions were written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["AppInfo", "RcError", "check_op", "expand_script", "translate"]

DEPENDENT = ("update", "load_module", "add_module", "delete_module")


class RcError(Exception):
    """A ``systools_rc`` error; ``reason`` is OTP's reason term."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AppInfo:
    """What systools_rc needs of an ``#application{}`` record."""

    name: str
    version: str
    modules: tuple[str, ...]
    type: str = "permanent"


def _is_atom(x: Any) -> bool:
    return isinstance(x, str)


# -- expand ------------------------------------------------------------------------------


def expand_script(script: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for i in script:
        t = i if isinstance(i, tuple) else None
        n = len(t) if t is not None else 0
        i2: Any = i
        if t is not None and n >= 2:
            tag = t[0]
            if tag == "load_module" and n == 2:
                i2 = ("load_module", t[1], "brutal_purge", "brutal_purge", [])
            elif tag == "load_module" and n == 3 and isinstance(t[2], list):
                i2 = ("load_module", t[1], "brutal_purge", "brutal_purge", t[2])
            elif tag == "update" and n == 2:
                i2 = ("update", t[1], "soft", "brutal_purge", "brutal_purge", [])
            elif tag == "update" and n == 3 and t[2] == "supervisor":
                i2 = (
                    "update",
                    t[1],
                    "static",
                    "default",
                    ("advanced", []),
                    "brutal_purge",
                    "brutal_purge",
                    [],
                )
            elif tag == "update" and n == 3 and (isinstance(t[2], tuple) or t[2] == "soft"):
                i2 = ("update", t[1], t[2], "brutal_purge", "brutal_purge", [])
            elif tag == "update" and n == 3 and isinstance(t[2], list):
                i2 = ("update", t[1], "soft", "brutal_purge", "brutal_purge", t[2])
            elif (
                tag == "update"
                and n == 4
                and (isinstance(t[2], tuple) or t[2] == "soft")
                and isinstance(t[3], list)
            ):
                i2 = ("update", t[1], t[2], "brutal_purge", "brutal_purge", t[3])
            elif tag == "add_application" and n == 2:
                i2 = ("add_application", t[1], "permanent")
        if isinstance(i2, list):
            out.extend(i2)
        else:
            out.append(i2)
    return out


# -- syntax ------------------------------------------------------------------------------


def _mod(m: Any) -> None:
    if not _is_atom(m):
        raise RcError(("bad_module", m))


def _list(x: Any) -> None:
    if not isinstance(x, list):
        raise RcError(("bad_list", x))


def _mods(ms: Any) -> None:
    _list(ms)
    for m in ms:
        _mod(m)


def _change(c: Any) -> None:
    if c == "soft" or (isinstance(c, tuple) and len(c) == 2 and c[0] == "advanced"):
        return
    raise RcError(("bad_change", c))


def _purge(p: Any) -> None:
    if p not in ("soft_purge", "brutal_purge"):
        raise RcError(("bad_purge_method", p))


def _timeout(t: Any) -> None:
    if t in ("default", "infinity"):
        return
    if isinstance(t, int) and not isinstance(t, bool) and t > 0:
        return
    raise RcError(("bad_timeout", t))


def _mod_type(t: Any) -> None:
    if t not in ("static", "dynamic"):
        raise RcError(("bad_mod_type", t))


def _mfa(m: Any, f: Any, a: Any) -> None:
    _mod(m)
    if not _is_atom(f):
        raise RcError(("bad_func", f))
    if not isinstance(a, list):
        raise RcError(("bad_args_list", a))


def _code_change_list(ms: Any) -> None:
    _list(ms)
    for x in ms:
        if isinstance(x, tuple) and len(x) == 2:
            _mod(x[0])
        else:
            raise RcError(("bad_code_change", x))


def check_op(i: Any) -> None:
    """OTP's ``check_op/1``: raise RcError for a malformed instruction."""
    if i == "mnesia_backup":
        raise RcError(("not_yet_implemented", "mnesia_backup"))
    if i in ("restart", "reboot", "point_of_no_return", "restart_new_emulator", "restart_emulator"):
        return
    if not isinstance(i, tuple) or not i:
        raise RcError(("bad_instruction", i))
    tag, n = i[0], len(i)
    if tag == "update" and n == 6:
        _mod(i[1])
        _change(i[2])
        _purge(i[3])
        _purge(i[4])
        _mods(i[5])
        return
    if tag == "update" and n == 7:
        _mod(i[1])
        _timeout(i[2])
        _change(i[3])
        _purge(i[4])
        _purge(i[5])
        _mods(i[6])
        return
    if tag == "update" and n == 8:
        _mod(i[1])
        _mod_type(i[2])
        _timeout(i[3])
        _change(i[4])
        _purge(i[5])
        _purge(i[6])
        _mods(i[7])
        return
    if tag == "load_module" and n == 5:
        _mod(i[1])
        _purge(i[2])
        _purge(i[3])
        _mods(i[4])
        return
    if tag in ("add_module", "delete_module") and n == 2:
        _mod(i[1])
        return
    if tag in ("add_module", "delete_module") and n == 3:
        _mod(i[1])
        _mods(i[2])
        return
    if tag in ("remove_application", "restart_application") and n == 2:
        if not _is_atom(i[1]):
            raise RcError(("bad_application", i[1]))
        return
    if tag == "add_application" and n == 3:
        if not _is_atom(i[1]):
            raise RcError(("bad_application", i[1]))
        if i[2] not in ("none", "load", "temporary", "transient", "permanent"):
            raise RcError(("bad_start_type", i[2]))
        return
    if tag == "load_object_code" and n == 2 and isinstance(i[1], tuple) and len(i[1]) == 3:
        lib, vsn, ms = i[1]
        if not _is_atom(lib):
            raise RcError(("bad_lib", lib))
        if not isinstance(vsn, str):
            raise RcError(("bad_lib_vsn", vsn))
        _mods(ms)
        return
    if tag in ("load", "remove") and n == 2 and isinstance(i[1], tuple) and len(i[1]) == 3:
        m, pre, post = i[1]
        _mod(m)
        _purge(pre)
        _purge(post)
        return
    if tag in ("purge", "resume", "stop", "start") and n == 2:
        _mods(i[1])
        return
    if tag == "suspend" and n == 2:
        _list(i[1])
        for x in i[1]:
            if isinstance(x, tuple) and len(x) == 2:
                _mod(x[0])
                _timeout(x[1])
            else:
                _mod(x)
        return
    if tag == "code_change" and n == 2:
        _code_change_list(i[1])
        return
    if tag == "code_change" and n == 3:
        _list(i[2])
        if i[1] not in ("up", "down"):
            raise RcError(("bad_mode", i[1]))
        _code_change_list(i[2])
        return
    if tag == "sync_nodes" and n == 3:
        if isinstance(i[2], tuple) and len(i[2]) == 3:
            _mfa(*i[2])
            return
        _list(i[2])
        for node in i[2]:
            if not _is_atom(node):
                raise RcError(("bad_node", node))
        return
    if tag == "apply" and n == 2 and isinstance(i[1], tuple) and len(i[1]) == 3:
        _mfa(*i[1])
        return
    raise RcError(("bad_instruction", i))


def _check_syntax(script: Sequence[Any]) -> None:
    for i in script:
        check_op(i)


# -- merge / split -------------------------------------------------------------------------


def _is_tag(i: Any, tag: str) -> bool:
    return isinstance(i, tuple) and len(i) >= 1 and i[0] == tag


def _split(pred: Callable[[Any], bool], xs: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    found = [x for x in xs if pred(x)]
    rest = [x for x in xs if not pred(x)]
    return found, rest


def _split_instrs(script: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    for idx, i in enumerate(script):
        if i == "point_of_no_return":
            if "point_of_no_return" in script[idx + 1 :]:
                raise RcError("too_many_point_of_no_return")
            return list(script[:idx]), list(script[idx + 1 :])
    return [], list(script)


def _split_script(script: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    before, after = _split_instrs(script)
    for i in before:
        if not (_is_tag(i, "load_object_code") or _is_tag(i, "apply")):
            raise RcError(("bad_op_before_point_of_no_return", i))
    found, rest = _split(lambda i: _is_tag(i, "load_object_code"), after)
    return before + found, rest


def _merge_scripts(scripts: Sequence[Sequence[Any]]) -> list[Any]:
    before: list[Any] = []
    after: list[Any] = []
    for s in scripts:
        b, a = _split_script(s)
        before += b
        after += a
    return [*before, "point_of_no_return", *after]


def _difference(xs: Sequence[Any], ys: Sequence[Any]) -> list[Any]:
    return [x for x in xs if x not in ys]


def _union(xs: Sequence[Any], ys: Sequence[Any]) -> list[Any]:
    return [x for x in xs if x not in ys] + list(ys)


def _union_all(lists: Sequence[Sequence[Any]]) -> list[Any]:
    """``union(L1, union(L2, ... union(Lk, [])))`` in linear time: an element stays in the
    last list that has it (OTP's union/2 keeps duplicates within one list)."""
    seen: set[Any] = set()
    parts: list[list[Any]] = []
    for lst in reversed(lists):
        parts.append([x for x in lst if x not in seen])
        seen.update(lst)
    return [x for part in reversed(parts) for x in part]


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, list):
        out: list[Any] = []
        for e in x:
            out.extend(_flatten(e))
        return out
    return [x]


def _check_script(before: Sequence[Any], after: Sequence[Any]) -> None:
    for i in after:
        if _is_tag(i, "load") and len(i) == 2:
            mod = i[1][0]
            if not any(_is_tag(b, "load_object_code") and mod in b[1][2] for b in before):
                raise RcError(("no_object_code", mod))
    suspended = [
        x[0] if isinstance(x, tuple) else x
        for x in _flatten([i[1] for i in after if _is_tag(i, "suspend")])
    ]
    resumed = _flatten([i[1] for i in after if _is_tag(i, "resume")])
    d = _difference(suspended, resumed)
    if d:
        raise RcError(("suspended_not_resumed", d))
    d = _difference(resumed, suspended)
    if d:
        raise RcError(("resumed_not_suspended", d))
    start = _flatten([i[1] for i in after if _is_tag(i, "start")])
    stop = _flatten([i[1] for i in after if _is_tag(i, "stop")])
    d = _difference(start, stop)
    if d:
        raise RcError(("start_not_stop", d))
    d = _difference(stop, start)
    if d:
        raise RcError(("stop_not_start", d))


def _normalize(script: Sequence[Any]) -> list[Any]:
    out = []
    for i in script:
        if _is_tag(i, "update") and len(i) == 6:
            i = ("update", i[1], "dynamic", "default", i[2], i[3], i[4], i[5])
        elif _is_tag(i, "update") and len(i) == 7:
            i = ("update", i[1], "dynamic", i[2], i[3], i[4], i[5], i[6])
        elif _is_tag(i, "add_module") and len(i) == 2:
            i = ("add_module", i[1], [])
        elif _is_tag(i, "delete_module") and len(i) == 2:
            i = ("delete_module", i[1], [])
        out.append(i)
    return out


# -- application instructions ----------------------------------------------------------------


def _find(apps: Sequence[AppInfo], name: str) -> AppInfo | None:
    for a in apps:
        if a.name == name:
            return a
    return None


def _start_action(name: str, type_: str) -> list[Any]:
    if type_ == "none":
        return []
    if type_ == "load":
        return [("apply", ("application", "load", [name]))]
    return [("apply", ("application", "start", [name, type_]))]


def _translate_application_instrs(
    script: Sequence[Any], apps: Sequence[AppInfo], pre_apps: Sequence[AppInfo]
) -> list[Any]:
    out: list[Any] = []
    for i in script:
        if _is_tag(i, "add_application") and len(i) == 3:
            app = _find(apps, i[1])
            if app is None:
                raise RcError(("no_such_application", i[1]))
            out += [("add_module", m, []) for m in app.modules] + _start_action(i[1], i[2])
        elif _is_tag(i, "remove_application") and len(i) == 2:
            if _find(apps, i[1]) is not None:
                raise RcError(("removed_application_present", i[1]))
            old = _find(pre_apps, i[1])
            if old is None:
                raise RcError(("no_such_application", i[1]))
            mods = list(old.modules)
            out += [("apply", ("application", "stop", [i[1]]))]
            out += [("remove", (m, "brutal_purge", "brutal_purge")) for m in mods]
            out += [("purge", mods), ("apply", ("application", "unload", [i[1]]))]
        elif _is_tag(i, "restart_application") and len(i) == 2:
            old = _find(pre_apps, i[1])
            new = _find(apps, i[1])
            if old is None or new is None:
                raise RcError(("no_such_application", i[1]))
            pre_mods = list(old.modules)
            out += [("apply", ("application", "stop", [i[1]]))]
            out += [("remove", (m, "brutal_purge", "brutal_purge")) for m in pre_mods]
            out += [("purge", pre_mods)]
            out += [("add_module", m, []) for m in new.modules]
            out += _start_action(i[1], new.type)
        else:
            out.append(i)
    return out


# -- dependent instructions ----------------------------------------------------------------


def _is_dependent(i: Any) -> bool:
    return isinstance(i, tuple) and len(i) > 1 and i[0] in DEPENDENT


def _graph(after: Sequence[Any]) -> tuple[dict[str, tuple[int, Any]], dict[str, list[str]]]:
    vertices: dict[str, tuple[int, Any]] = {}
    deps: dict[str, list[str]] = {}
    n = 0
    for i in after:
        if not (isinstance(i, tuple) and i and i[0] in DEPENDENT):
            continue
        n += 1
        mod = i[1]
        if mod in vertices:
            raise RcError(("muldef_module", mod))
        vertices[mod] = (n, i)
        deps[mod] = list(i[-1])
    for ds in deps.values():
        for d in ds:
            if d not in vertices:
                raise RcError(("undef_module", d))
    return vertices, deps


def _components(vertices: dict[str, tuple[int, Any]], deps: dict[str, list[str]]) -> list[set[str]]:
    und: dict[str, set[str]] = {v: set() for v in vertices}
    for m, ds in deps.items():
        for d in ds:
            und[m].add(d)
            und[d].add(m)
    seen: set[str] = set()
    comps = []
    for v in vertices:
        if v in seen:
            continue
        comp: set[str] = set()
        stack = [v]
        while stack:
            x = stack.pop()
            if x in comp:
                continue
            comp.add(x)
            stack.extend(und[x] - comp)
        seen |= comp
        comps.append(comp)
    return comps


def _sccs(nodes: list[str], edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, []):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    for v in nodes:
        if v not in index:
            strong(v)
    return out


def _dependency_order(
    comp: set[str], vertices: dict[str, tuple[int, Any]], deps: dict[str, list[str]]
) -> list[Any]:
    """The component's instructions, dependents first; cycles keep their written order;
    ties between unrelated groups go by the written order."""
    nodes = sorted(comp, key=lambda m: vertices[m][0])
    edges = {m: [d for d in deps[m] if d in comp] for m in nodes}
    sccs = _sccs(nodes, edges)
    scc_of = {m: k for k, c in enumerate(sccs) for m in c}
    first = {k: min(vertices[m][0] for m in c) for k, c in enumerate(sccs)}
    indeg = {k: 0 for k in range(len(sccs))}
    succ: dict[int, set[int]] = {k: set() for k in range(len(sccs))}
    for m in nodes:
        for d in edges[m]:
            a, b = scc_of[m], scc_of[d]
            if a != b and b not in succ[a]:
                succ[a].add(b)
                indeg[b] += 1
    ready = sorted((k for k in indeg if indeg[k] == 0), key=lambda k: first[k])
    order: list[int] = []
    while ready:
        k = ready.pop(0)
        order.append(k)
        for b in succ[k]:
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
        ready.sort(key=lambda x: first[x])
    out: list[Any] = []
    for k in order:
        for m in sorted(sccs[k], key=lambda m: vertices[m][0]):
            out.append(vertices[m][1])
    return out


def _get_lib(mod: str, apps: Sequence[AppInfo]) -> tuple[str, str]:
    for a in apps:
        if mod in a.modules:
            return a.name, a.version
    raise RcError(("no_such_module", mod))


def _lib_index(apps: Sequence[AppInfo]) -> dict[str, tuple[str, str]]:
    """module → the *first* application listing it (OTP's get_lib), for O(1) lookups."""
    index: dict[str, tuple[str, str]] = {}
    for a in apps:
        for m in a.modules:
            index.setdefault(m, (a.name, a.version))
    return index


def _dep_to_low(
    mode: str, instrs: Sequence[Any], apps: Sequence[AppInfo] | dict[str, tuple[str, str]]
) -> tuple[list[Any], list[Any]]:
    update_mods: list[Any] = []
    for i in instrs:
        if _is_tag(i, "update") and len(i) == 8:
            update_mods.append(i[1] if i[3] == "default" else (i[1], i[3]))
    suspend = [("suspend", update_mods)] if update_mods else []
    resume = (
        [("resume", [m[0] if isinstance(m, tuple) else m for m in reversed(update_mods)])]
        if update_mods
        else []
    )
    frags: list[list[Any]] = []
    for i in instrs:
        if _is_tag(i, "update") and len(i) == 8:
            frags.append([("load", (i[1], i[5], i[6]))])
        elif _is_tag(i, "load_module") and len(i) == 5:
            frags.append([("load", (i[1], i[2], i[3]))])
        elif _is_tag(i, "delete_module") and len(i) == 3:
            frags.append([("remove", (i[1], "brutal_purge", "brutal_purge")), ("purge", [i[1]])])
    load_remove = [x for f in frags for x in f]
    rev_load_remove = [x for f in reversed(frags) for x in f]
    index = apps if isinstance(apps, dict) else _lib_index(apps)
    loc = []
    for x in load_remove:
        if _is_tag(x, "load"):
            lib = index.get(x[1][0])
            if lib is None:
                raise RcError(("no_such_module", x[1][0]))
            loc.append(("load_object_code", (*lib, [x[1][0]])))
    if mode == "up":
        cc = [
            (i[1], i[4][1])
            for i in instrs
            if _is_tag(i, "update") and len(i) == 8 and isinstance(i[4], tuple)
        ]
        cci = [("code_change", "up", cc)] if cc else []
        return loc, suspend + rev_load_remove + cci + resume
    pre = [
        (i[1], i[4][1])
        for i in instrs
        if _is_tag(i, "update") and len(i) == 8 and i[2] == "dynamic" and isinstance(i[4], tuple)
    ]
    post = [
        (i[1], i[4][1])
        for i in instrs
        if _is_tag(i, "update") and len(i) == 8 and i[2] == "static" and isinstance(i[4], tuple)
    ]
    prei = [("code_change", "down", pre)] if pre else []
    posti = [("code_change", "down", post)] if post else []
    return loc, suspend + prei + load_remove + posti + resume


def _translate_dependent(
    mode: str, before: list[Any], after: list[Any], apps: Sequence[AppInfo]
) -> tuple[list[Any], list[Any]]:
    vertices, deps = _graph(after)
    comps = _components(vertices, deps)
    comp_of = {m: c for c in comps for m in c}
    new_before: list[Any] = []
    new_after: list[Any] = []
    index = _lib_index(apps)
    done: set[int] = set()  # ids of dependent instructions already translated
    for i in after:
        if _is_dependent(i):
            if id(i) in done:
                continue
            comp = comp_of[i[1]]
            group = _dependency_order(comp, vertices, deps)
            done.update(id(x) for x in group)
            b, a = _dep_to_low(mode, group, index)
            new_before += b
            new_after += a
        else:
            new_after.append(i)
    return before + new_before, new_after


# -- load_object_code merging and emulator restarts ------------------------------------------


def _merge_loc(before: Sequence[Any]) -> list[Any]:
    found, rest = _split(lambda i: _is_tag(i, "load_object_code"), before)

    def mlo(items: list[Any]) -> list[Any]:
        out = []
        while items:
            lib, vsn, mods = items[0][1]
            same, other = [], []
            for x in items[1:]:
                lib2, vsn2, _ = x[1]
                if lib2 == lib and vsn2 == vsn:
                    same.append(x)
                elif lib2 == lib:
                    raise RcError(("conflicting_versions", lib, vsn, vsn2))
                else:
                    other.append(x)
            out.append(
                ("load_object_code", (lib, vsn, _union_all([mods, *(x[1][2] for x in same)])))
            )
            items = other
        return out

    return mlo(found) + rest


def _sort_emulator_restart(
    mode: str, before: list[Any], after: list[Any]
) -> tuple[list[Any], list[Any]]:
    a1 = [x for x in after if x != "restart_new_emulator"]
    if a1 != after:
        if mode == "up":
            before = ["restart_new_emulator", *before]
        else:
            a1 = [*a1, "restart_emulator"]
    a2 = [x for x in a1 if x != "restart_emulator"]
    if a2 != a1:
        a2 = [*a2, "restart_emulator"]
    return before, a2


def translate(
    mode: str,
    scripts: Sequence[Sequence[Any]],
    apps: Sequence[AppInfo],
    pre_apps: Sequence[AppInfo],
) -> list[Any]:
    """``systools_rc:translate_scripts(Mode, Scripts, Appls, PreAppls)`` over terms.

    ``mode`` is ``"up"`` or ``"dn"``/``"down"``. Raises RcError with OTP's reason.
    """
    m = "up" if mode == "up" else "dn"
    expanded = [expand_script(s) for s in scripts]
    merged = _merge_scripts(expanded)
    _check_syntax(merged)
    script = _normalize(merged)
    before, after = _split_script(script)
    _check_script(before, after)
    after = _translate_application_instrs(after, apps, pre_apps)
    after = [
        ("load_module", i[1], "brutal_purge", "brutal_purge", i[2])
        if _is_tag(i, "add_module") and len(i) == 3
        else i
        for i in after
    ]
    before, after = _translate_dependent(m, before, after, apps)
    before = _merge_loc(before)
    before, after = _sort_emulator_restart(m, before, after)
    result = [*before, "point_of_no_return", *after]
    _check_syntax(result)
    return result
