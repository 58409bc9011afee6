"""Checks that read the namespace's real objects: call arguments, attribute names, tests.

Nothing here runs the control file.  A small, flow-insensitive value analysis decides
what some expressions are, and only those are checked:

* a namespace name the file never rebinds is the namespace's real object (``hosts``,
  ``kvm``, ``job``, ``parallel_simple``...); an attribute of a module or class is that
  attribute;
* a call of an autoserv class is an instance of it; a call of an autoserv function or
  method whose return annotation is an autoserv class is an instance of that class
  (``hosts.create_host(m)`` is an ``SSHHost``, ``host.run(...)`` a ``CmdResult``);
* ``x[i]`` and ``for y in x`` of a list whose every element (in its displays and in every
  ``x.append(...)``/``x.insert(...)`` of the file) is such an instance, are one;
* a name has a value when every binding of it in its scope gives the same value;
* a parameter named ``host`` or ``h`` that is never rebound is "a host or a machine name".

Findings (all errors, except where said):

* ``call``: a call of an autoserv function, class or method (of a value above) that its
  signature cannot take (``inspect.signature(...).bind`` on the call's shape: how many
  positional arguments, which keywords); calls with ``*args``/``**kwargs`` are skipped;
* ``attribute``: an attribute of a namespace module, class or autoserv object that it
  lacks; of a host that no host class has (``hosts.__all__``'s classes; instance
  attributes are what their source assigns to ``self``); of another autoserv
  instance that its class lacks; of a host-named parameter that neither a host class nor
  ``str`` has (an error when a host attribute is a close match, a warning otherwise).
  Attributes the file assigns itself, and names given as literals to ``hasattr``,
  ``getattr``, ``setattr``, are never reported; neither are classes with ``__getattr__``;
* ``unknown-test``: ``job.run_test('name')``, ``Autotest(...).run_test('name')`` (any
  ``Autotest`` class, and names bound to one) and ``host.run_test('name')`` of a plain test
  name found in no test directory and not built in.  URLs and paths are not checked.
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import types
import typing
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from autoserv.check.findings import ERROR, WARNING, Finding
from autoserv.check.namespaces import KnownTests
from autoserv.check.source import suggest
from autoserv.unsupported import HOST_ATTRIBUTES, KERNEL_MESSAGE, Unsupported

__all__ = ["semantic_findings", "HOST_PARAMS", "host_classes", "class_attributes"]

#: Parameter names taken for "a host object or a machine string".
HOST_PARAMS = frozenset({"host", "h"})

_ADDS_ONE = {"append": 0, "insert": 1}  # list method -> index of the added element
_ADDS_MANY = {"extend", "__setitem__", "__iadd__"}
_ATTR_BUILTINS = {"hasattr", "getattr", "setattr", "delattr"}
_TEST_NAME = re.compile(r"[A-Za-z_]\w*\Z")


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Obj:
    """A real object of the namespace (or an attribute of one)."""

    value: Any


@dataclass(frozen=True)
class _Inst:
    """An instance of an autoserv class."""

    cls: type


@dataclass(frozen=True)
class _ListOf:
    """A list whose elements are all instances of ``cls``."""

    cls: type


@dataclass(frozen=True)
class _HostParam:
    """A parameter named like a host: a host object or a machine string."""

    name: str


_Value = _Obj | _Inst | _ListOf | _HostParam | None


def _is_autoserv(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return isinstance(module, str) and (module == "autoserv" or module.startswith("autoserv."))


@functools.cache
def host_classes() -> tuple[type, ...]:
    """The host classes the control-file ``hosts`` module exports."""
    from autoserv import hosts

    found = []
    for name in hosts.__all__:
        obj = getattr(hosts, name, None)
        if isinstance(obj, type) and issubclass(obj, hosts.Host):
            found.append(obj)
    return tuple(found)


def _is_host_class(cls: type) -> bool:
    from autoserv import hosts

    return issubclass(cls, hosts.Host)


def _same(a: _Value, b: _Value) -> _Value:
    """The common value of two bindings, or None."""
    if isinstance(a, _Obj) and isinstance(b, _Obj):
        return a if a.value is b.value else None
    if isinstance(a, _Inst | _ListOf) and type(a) is type(b):
        assert isinstance(b, _Inst | _ListOf)
        if a.cls is b.cls or (_is_host_class(a.cls) and _is_host_class(b.cls)):
            return a
        return None
    return a if a is not None and a == b else None


_SELF_ATTR = re.compile(r"\bself\.([A-Za-z_]\w*)")


@functools.cache
def _self_attributes(path: str) -> frozenset[str]:
    """Every ``self.<name>`` the source file ``path`` mentions.

    An over-approximation of what its classes' methods assign (a regular expression, not
    a parse: ~1 ms instead of ~10 ms per file); it can only hide findings, never add one.
    """
    with open(path, encoding="utf-8") as f:
        return frozenset(_SELF_ATTR.findall(f.read()))


_class_attrs: dict[type, frozenset[str] | None] = {}


def class_attributes(cls: type) -> frozenset[str] | None:
    """Every attribute an instance of ``cls`` can have, or None if that cannot be known.

    Class attributes (``dir``), annotations and slots, and the ``self.<name>`` of the
    source file of each class of the MRO (what its methods assign).  None for a class with
    ``__getattr__``, or with a Python base whose source cannot be read.
    """
    if cls not in _class_attrs:
        _class_attrs[cls] = _compute_class_attributes(cls)
    return _class_attrs[cls]


def _compute_class_attributes(cls: type) -> frozenset[str] | None:
    names = set(dir(cls))
    for klass in cls.__mro__:
        if klass is object:
            continue
        own = vars(klass)
        if "__getattr__" in own or "__getattribute__" in own:
            return None
        names.update(own.get("__annotations__", {}))
        slots = own.get("__slots__", ())
        names.update([slots] if isinstance(slots, str) else slots)
        if klass.__module__ == "builtins":
            continue
        try:
            path = inspect.getsourcefile(klass)
        except TypeError:
            path = None
        if path is None or not os.path.isfile(path):
            if "__dict__" in own:  # a Python class we cannot read
                return None
            continue
        try:
            names.update(_self_attributes(path))
        except (OSError, UnicodeDecodeError):
            return None
    return frozenset(names)


@functools.cache
def _host_attributes() -> frozenset[str] | None:
    names: set[str] = set()
    for cls in host_classes():
        attrs = class_attributes(cls)
        if attrs is None:
            return None
        names |= attrs
    return frozenset(names)


_signatures: dict[Any, inspect.Signature | None] = {}


def _signature(obj: Any) -> inspect.Signature | None:
    key = getattr(obj, "__func__", obj)  # bound methods: one entry per function
    if key is not obj:
        key = (key, getattr(obj, "__self__", None) is not None)
    try:
        return _signatures[key]
    except (KeyError, TypeError):
        pass
    sig = _compute_signature(obj)
    try:
        _signatures[key] = sig
    except TypeError:
        pass
    return sig


def _compute_signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


@functools.cache
def _method_signature(cls: type, name: str) -> inspect.Signature | None:
    """The signature of ``cls().<name>`` (without ``self``), if it is a plain method."""
    try:
        raw = inspect.getattr_static(cls, name)
    except AttributeError:
        return None
    if isinstance(raw, staticmethod):
        return _signature(raw.__func__)
    if isinstance(raw, classmethod):
        return _signature(getattr(cls, name))
    if isinstance(raw, types.FunctionType):
        sig = _signature(raw)
        if sig is None or not sig.parameters:
            return None
        return sig.replace(parameters=list(sig.parameters.values())[1:])
    return None


_returns_cache: dict[Any, _Value] = {}


def _returns(fn: Any) -> _Value:
    """What calling the real object ``fn`` gives: an instance of an autoserv class, or None."""
    if isinstance(fn, type):
        return _Inst(fn) if _is_autoserv(fn) else None
    key = getattr(fn, "__func__", fn)
    try:
        return _returns_cache[key]
    except (KeyError, TypeError):
        pass
    value: _Value = None
    if _is_autoserv(fn):
        try:
            ret = typing.get_type_hints(key).get("return")
        except Exception:  # unresolvable annotations: unknown
            ret = None
        if isinstance(ret, type) and _is_autoserv(ret):
            value = _Inst(ret)
    try:
        _returns_cache[key] = value
    except TypeError:
        pass
    return value


def _has_attribute(obj: Any, name: str) -> bool | None:
    """Whether the real object ``obj`` has ``name`` (None: not ours to judge)."""
    if isinstance(obj, types.ModuleType | type):
        try:
            return hasattr(obj, name)
        except Exception:  # a module __getattr__ that failed: not a finding
            return None
    if not _is_autoserv(type(obj)):
        return None
    attrs = class_attributes(type(obj))
    if attrs is None:
        return None
    return name in attrs or name in getattr(obj, "__dict__", {})


def _attribute_value(obj: Any, name: str) -> _Value:
    if isinstance(obj, types.ModuleType | type):
        try:
            return _Obj(getattr(obj, name))
        except Exception:
            return None
    try:
        raw = inspect.getattr_static(obj, name)
    except AttributeError:
        return None
    if isinstance(raw, types.FunctionType | staticmethod | classmethod):
        return _Obj(getattr(obj, name))
    return None  # a property or data: its value at check time means nothing


def _describe(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return "a module"
    if isinstance(obj, type):
        return "a class"
    name = type(obj).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


# -- scopes ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Scope:
    kind: str  # module, function, class, comprehension
    parent: _Scope | None
    #: name -> its bindings: ("assign", value), ("list", display), ("for", iterable),
    #: ("param", None) or ("other", None)
    bindings: dict[str, list[tuple[str, ast.AST | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    passthrough: set[str] = field(default_factory=set)  # global / nonlocal names
    is_global: set[str] = field(default_factory=set)

    def bind(self, name: str, kind: str, node: ast.AST | None = None) -> None:
        self.bindings[name].append((kind, node))


class _Builder(ast.NodeVisitor):
    """One pass over the tree: scopes, bindings, list additions, stored attributes."""

    def __init__(self, tree: ast.Module) -> None:
        self.module = _Scope("module", None)
        self.scope = self.module
        self.scope_of: dict[int, _Scope] = {}
        self.handled: set[int] = set()
        #: (scope, list name, added element or None when unknown)
        self.additions: list[tuple[_Scope, str, ast.expr | None]] = []
        self.stored_attrs: set[str] = set()
        #: (scope, node) of every attribute load and every call, in source order
        self.loads: list[tuple[_Scope, ast.Attribute]] = []
        self.calls: list[tuple[_Scope, ast.Call]] = []
        self.names: list[tuple[_Scope, ast.Name]] = []
        self.visit(tree)

    def _enter(self, node: ast.AST, kind: str) -> _Scope:
        scope = _Scope(kind, self.scope)
        self.scope_of[id(node)] = scope
        return scope

    def _bind(self, name: str, kind: str, value: ast.AST | None = None) -> None:
        """Record a binding of ``name`` where it lands (``global``: the module; ``nonlocal``:
        makes the enclosing functions' ``name`` unknown)."""
        if name in self.scope.is_global:
            self.module.bind(name, kind, value)
        elif name in self.scope.passthrough:
            s = self.scope.parent
            while s is not None and s.kind != "module":
                if s.kind == "function":
                    s.bind(name, "other")
                s = s.parent
        else:
            self.scope.bind(name, kind, value)

    def _bind_target(self, target: ast.expr, kind: str, value: ast.AST | None) -> None:
        if isinstance(target, ast.Name):
            self._bind(target.id, kind, value)
            self.handled.add(id(target))
        # other targets (tuples, attributes, subscripts): their names are bound by visit_Name

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        for d in getattr(node, "decorator_list", []):
            self.visit(d)
        for default in [*node.args.defaults, *[d for d in node.args.kw_defaults if d]]:
            self.visit(default)
        if not isinstance(node, ast.Lambda):
            self._bind(node.name, "other")
            for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                if a.annotation is not None:
                    self.visit(a.annotation)
            if node.returns is not None:
                self.visit(node.returns)
        outer, self.scope = self.scope, self._enter(node, "function")
        args = node.args
        for param in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
            if param is not None:
                self.scope.bind(param.arg, "param")
        body = node.body if isinstance(node.body, list) else [node.body]
        for stmt in body:
            self.visit(stmt)
        self.scope = outer

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for n in [*node.decorator_list, *node.bases, *node.keywords]:
            self.visit(n)
        self._bind(node.name, "other")
        outer, self.scope = self.scope, self._enter(node, "class")
        for stmt in node.body:
            self.visit(stmt)
        self.scope = outer

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.DictComp | ast.GeneratorExp) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        outer, self.scope = self.scope, self._enter(node, "comprehension")
        for i, gen in enumerate(node.generators):
            if i:
                self.visit(gen.iter)
            self._bind_target(gen.target, "for", gen.iter)
            self.visit(gen.target)
            for cond in gen.ifs:
                self.visit(cond)
        if isinstance(node, ast.DictComp):
            self.visit(node.key)
            self.visit(node.value)
        else:
            self.visit(node.elt)
        self.scope = outer

    visit_ListComp = _comprehension
    visit_SetComp = _comprehension
    visit_DictComp = _comprehension
    visit_GeneratorExp = _comprehension

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            kind = "list" if isinstance(node.value, ast.List | ast.ListComp) else "assign"
            self._bind_target(target, kind, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            kind = "list" if isinstance(node.value, ast.List | ast.ListComp) else "assign"
            self._bind_target(node.target, kind, node.value)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        if isinstance(node.target, ast.Name):
            self.additions.append((self.scope, node.target.id, None))
        self.generic_visit(node)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._bind_target(node.target, "for", node.iter)
        self.generic_visit(node)

    visit_AsyncFor = visit_For

    def visit_Global(self, node: ast.Global) -> None:
        self.scope.passthrough.update(node.names)
        self.scope.is_global.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.scope.passthrough.update(node.names)

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._bind((alias.asname or alias.name).split(".")[0], "other")

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._bind(node.name, "other")
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del) and id(node) not in self.handled:
            self._bind(node.id, "other")
        elif isinstance(node.ctx, ast.Load):
            self.names.append((self.scope, node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.loads.append((self.scope, node))
        else:
            self.stored_attrs.add(node.attr)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Store) and isinstance(node.value, ast.Name):
            self.additions.append((self.scope, node.value.id, None))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.calls.append((self.scope, node))
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            if f.attr in _ADDS_ONE:
                index = _ADDS_ONE[f.attr]
                added = node.args[index] if len(node.args) > index else None
                self.additions.append((self.scope, f.value.id, added))
            elif f.attr in _ADDS_MANY:
                self.additions.append((self.scope, f.value.id, None))
        if isinstance(f, ast.Name) and f.id in _ATTR_BUILTINS and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                self.stored_attrs.add(name.value)
        self.generic_visit(node)


# -- the analysis ------------------------------------------------------------------------


class _Analysis:
    def __init__(
        self, tree: ast.Module, display: str, namespace: dict[str, Any], real: bool,
        tests: KnownTests,
    ) -> None:
        self.display = display
        self.namespace = namespace
        self.real = real  # namespace values are the real objects (server side)
        self.tests = tests
        self.b = _Builder(tree)
        self.memo: dict[tuple[int, str], _Value] = {}
        self.findings: list[Finding] = []

    # values ----------------------------------------------------------------------------

    def binding_scope(self, name: str, scope: _Scope) -> _Scope | None:
        """The scope of the file that binds ``name`` as seen from ``scope`` (None: none)."""
        if name in scope.is_global:
            return self.b.module if name in self.b.module.bindings else None
        s: _Scope | None = scope
        while s is not None:
            if (s is scope or s.kind != "class") and name in s.bindings and (
                name not in s.passthrough
            ):
                return s
            s = s.parent
        return None

    def name_value(self, name: str, scope: _Scope, depth: int) -> _Value:
        s = self.binding_scope(name, scope)
        if s is None:
            if self.real and name in self.namespace:
                return _Obj(self.namespace[name])
            return None
        key = (id(s), name)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = None  # cycles are unknown
        value = self._bindings_value(name, s, depth)
        self.memo[key] = value
        return value

    def _bindings_value(self, name: str, s: _Scope, depth: int) -> _Value:
        binds = s.bindings[name]
        kinds = {k for k, _ in binds}
        if "param" in kinds:
            return _HostParam(name) if kinds == {"param"} and name in HOST_PARAMS else None
        if "list" in kinds:
            return self._list_value(name, s, depth) if kinds == {"list"} else None
        value: _Value = None
        for i, (kind, node) in enumerate(binds):
            if kind not in ("assign", "for") or not isinstance(node, ast.expr):
                return None
            v = self.value(node, s, depth + 1)
            if kind == "for":
                v = _Inst(v.cls) if isinstance(v, _ListOf) else None
            value = v if i == 0 else _same(value, v)
            if value is None:
                return None
        return value

    def _display_elements(self, node: ast.AST, scope: _Scope) -> list[tuple[ast.expr | None, _Scope]]:
        if isinstance(node, ast.List):
            return [(e, scope) for e in node.elts]
        if isinstance(node, ast.ListComp):
            return [(node.elt, self.b.scope_of[id(node)])]
        return [(None, scope)]

    def _list_value(self, name: str, s: _Scope, depth: int) -> _Value:
        elements: list[tuple[ast.expr | None, _Scope]] = []
        for _, node in s.bindings[name]:
            if node is not None:
                elements += self._display_elements(node, s)
        for where, added_to, element in self.b.additions:
            if added_to == name and self.binding_scope(name, where) is s:
                elements.append((element, where))
        return self._elements_value(elements, depth)

    def _elements_value(self, elements: list[tuple[ast.expr | None, _Scope]], depth: int) -> _Value:
        """A list of these elements: all instances of one class, or unknown."""
        merged: _Value = None
        for i, (element, where) in enumerate(elements):
            if element is None or isinstance(element, ast.Starred):
                return None
            v = self.value(element, where, depth + 1)
            if not isinstance(v, _Inst):
                return None
            merged = v if i == 0 else _same(merged, v)
            if merged is None:
                return None
        return _ListOf(merged.cls) if isinstance(merged, _Inst) else None

    def value(self, expr: ast.expr, scope: _Scope, depth: int = 0) -> _Value:
        if depth > 30:
            return None
        if isinstance(expr, ast.Name):
            return self.name_value(expr.id, scope, depth)
        if isinstance(expr, ast.Attribute):
            base = self.value(expr.value, scope, depth + 1)
            return _attribute_value(base.value, expr.attr) if isinstance(base, _Obj) else None
        if isinstance(expr, ast.List | ast.ListComp):
            return self._elements_value(self._display_elements(expr, scope), depth)
        if isinstance(expr, ast.Subscript):
            base = self.value(expr.value, scope, depth + 1)
            if isinstance(base, _ListOf) and not isinstance(expr.slice, ast.Slice):
                return _Inst(base.cls)
            return None
        if isinstance(expr, ast.Call):
            f = self.value(expr.func, scope, depth + 1)
            if isinstance(f, _Obj):
                return _returns(f.value)
            if isinstance(expr.func, ast.Attribute):
                base = self.value(expr.func.value, scope, depth + 1)
                for cls in self._classes_of(base):
                    if hasattr(cls, expr.func.attr):
                        method = getattr(cls, expr.func.attr)
                        return _returns(method) if callable(method) else None
        return None

    def _classes_of(self, v: _Value) -> tuple[type, ...]:
        if isinstance(v, _HostParam) or (isinstance(v, _Inst) and _is_host_class(v.cls)):
            return host_classes()
        if isinstance(v, _Inst):
            return (v.cls,)
        return ()

    # findings --------------------------------------------------------------------------

    def add(self, node: ast.AST, severity: str, code: str, message: str, col: int | None = None) -> None:
        line = getattr(node, "lineno", 1)
        column = (col if col is not None else getattr(node, "col_offset", 0)) + 1
        self.findings.append(Finding(self.display, line, column, severity, code, message))

    def check_attribute(self, scope: _Scope, node: ast.Attribute) -> None:
        name = node.attr
        if name in self.b.stored_attrs:
            return
        base = self.value(node.value, scope)
        if base is None or isinstance(base, _ListOf):
            return
        text = ast.unparse(node.value)
        col = (node.end_col_offset or 0) - len(name) if node.end_lineno == node.lineno else None
        if isinstance(base, _Obj):
            has = _has_attribute(base.value, name)
            if has is False:
                candidates = dir(base.value)
                if not isinstance(base.value, types.ModuleType | type):
                    candidates = sorted(class_attributes(type(base.value)) or ())
                self.add(node, ERROR, "attribute",
                         f"'{text}' ({_describe(base.value)}) has no attribute '{name}'"
                         + suggest(name, candidates), col)
            return
        if isinstance(base, _HostParam):
            attrs = _host_attributes()
            if attrs is None or name in attrs or hasattr(str, name):
                return
            hint = suggest(name, attrs)
            self.add(node, ERROR if hint else WARNING, "attribute",
                     f"'{text}' (a parameter named like a host): neither a host nor a machine "
                     f"name (str) has attribute '{name}'" + hint, col)
            return
        if _is_host_class(base.cls) and name in HOST_ATTRIBUTES:
            self.add(node, ERROR, "unsupported", f"'{text}.{name}' is {HOST_ATTRIBUTES[name]}", col)
            return
        if _is_host_class(base.cls):
            attrs = _host_attributes()
            if attrs is not None and name not in attrs:
                self.add(node, ERROR, "attribute",
                         f"'{text}' is a host: no host class has attribute '{name}'"
                         + suggest(name, attrs), col)
            return
        attrs = class_attributes(base.cls)
        if attrs is not None and name not in attrs:
            self.add(node, ERROR, "attribute",
                     f"'{text}' ({_describe_cls(base.cls)}) has no attribute '{name}'"
                     + suggest(name, attrs), col)

    def check_call(self, scope: _Scope, node: ast.Call) -> None:
        self.check_test(scope, node)
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords
        ):
            return
        f = self.value(node.func, scope)
        signatures: list[inspect.Signature] = []
        if isinstance(f, _Obj):
            if not callable(f.value) or not _is_autoserv(f.value):
                return
            sig = _signature(f.value)
            if sig is not None:
                signatures.append(sig)
        elif f is None and isinstance(node.func, ast.Attribute):
            base = self.value(node.func.value, scope)
            name = node.func.attr
            if isinstance(base, _HostParam) and hasattr(str, name):
                return
            for cls in self._classes_of(base):
                sig = _method_signature(cls, name)
                if sig is not None:
                    signatures.append(sig)
                elif hasattr(cls, name):
                    return  # some class has it in a shape we do not read
        if not signatures:
            return
        problems = []
        for sig in signatures:
            try:
                sig.bind(*range(len(node.args)), **{k.arg: None for k in node.keywords if k.arg})
                return
            except TypeError as exc:
                problems.append(str(exc))
        self.add(node, ERROR, "call", f"{ast.unparse(node.func)}(): {problems[0]}")

    def check_test(self, scope: _Scope, node: ast.Call) -> None:
        f = node.func
        if not (isinstance(f, ast.Attribute) and f.attr == "run_test"):
            return
        receiver = f.value
        if isinstance(receiver, ast.Name) and receiver.id == "job":
            is_runner = self.binding_scope("job", scope) is None  # the namespace's job
        else:
            v = self.value(receiver, scope)
            is_host = isinstance(v, _HostParam) or (isinstance(v, _Inst) and _is_host_class(v.cls))
            is_runner = is_host or self._is_autotest(receiver, scope, 0)
        if not is_runner:
            return
        arg: ast.expr | None = node.args[0] if node.args else None
        if arg is None:
            arg = next((k.value for k in node.keywords if k.arg in ("test_name", "url")), None)
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
            return
        name = arg.value
        if not _TEST_NAME.match(name) or self.tests.has(name):
            return
        known = list(self.tests.builtin)
        for d in self.tests.dirs:
            try:
                known += [e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e))]
            except OSError:
                pass
        where = ", ".join(self.tests.dirs)
        searched = f"not built in ({', '.join(self.tests.builtin)})"
        searched += f" and not in {where}" if where else (
            ", and no test directory is configured (see autoserv check --help)"
        )
        self.add(arg, ERROR, "unknown-test", f"unknown test '{name}'{suggest(name, known)}: {searched}")

    def _is_autotest(self, expr: ast.expr, scope: _Scope, depth: int) -> bool:
        if depth > 10:
            return False
        if isinstance(expr, ast.Call):
            f = expr.func
            return (isinstance(f, ast.Name) and f.id == "Autotest") or (
                isinstance(f, ast.Attribute) and f.attr == "Autotest"
            )
        if isinstance(expr, ast.Name):
            s = self.binding_scope(expr.id, scope)
            if s is None:
                return False
            binds = s.bindings[expr.id]
            return bool(binds) and all(
                kind == "assign" and isinstance(node, ast.expr) and self._is_autotest(node, s, depth + 1)
                for kind, node in binds
            )
        return False

    def check_unsupported_name(self, scope: _Scope, node: ast.Name) -> None:
        """A use of a namespace name that only raises here (the original's kernel helpers)."""
        if not self.real or not isinstance(node.ctx, ast.Load):
            return
        v = self.name_value(node.id, scope, 0)
        if isinstance(v, _Obj) and isinstance(v.value, Unsupported):
            self.add(node, ERROR, "unsupported", f"'{node.id}' is {KERNEL_MESSAGE}")

    def run(self) -> list[Finding]:
        for scope, name in self.b.names:
            self.check_unsupported_name(scope, name)
        for scope, attr in self.b.loads:
            self.check_attribute(scope, attr)
        for scope, call in self.b.calls:
            self.check_call(scope, call)
        return self.findings


def _describe_cls(cls: type) -> str:
    name = cls.__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def semantic_findings(
    tree: ast.Module, display: str, namespace: dict[str, Any], real: bool, tests: KnownTests
) -> list[Finding]:
    """The call, attribute and test findings for one parsed control file.

    ``namespace`` maps the control file's namespace names to their objects; ``real`` says
    they are the runner's real objects (server side) rather than mere names (client side,
    whose calls and attributes are then not checked; its tests are).
    """
    return _Analysis(tree, display, namespace, real, tests).run()

