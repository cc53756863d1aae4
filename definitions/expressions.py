"""The one language of conditions, computed times and templates: sandboxed Jinja2.

Expressions see `event`, `order`, `customer`, `vars` and `now` (in the customer's time zone) and
these helpers:

    time(x)            an RFC 3339 string or datetime → datetime; a naive time is read in the
                       customer's time zone
    minutes(n) hours(n) days(n) duration("1d12h")      → timedelta, for arithmetic on times
    yearly(date, time="10:00", before="3d")   the next moment, strictly after now, that is `before`
                       ahead of the yearly anniversary of `date` (YYYY-MM-DD or --MM-DD) at `time`
                       local; 29 February is kept on 28 February in other years
    replenish_at(order)   when the customer likely runs out of what the order bought (core/products.py:
                       their own interval, the shop's learned cycle, the catalogue's cycle_days), or
                       nothing when no item has a cycle

Templates add the filter `localtime(fmt)` (a time shown in the customer's time zone).

The data shows only its contents (a mapping its keys, a list its items, never their methods), and
a missing key or a null value, at any depth, is *nothing*: false in comparisons, nothing in
arithmetic, replaced by `default`; printing it in a template fails naming the path (`_Nothing`,
and "What nothing does" in docs/journeys.md).

Everything here is deterministic (no clock, no I/O) so workflows may evaluate expressions; they
are compiled when their definition loads, never in a workflow (see `_expression`).
"""

from __future__ import annotations

import calendar
import functools
import operator
import re
import time as _time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError, TemplateSyntaxError, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.filters import do_default
from jinja2.sandbox import ImmutableSandboxedEnvironment, modifies_known_mutable
from jinja2.utils import missing
from temporalio import workflow as _workflow

from core.products import replenish_at as _replenish_at
from definitions.schema import parse_duration

_MONTH_DAY = re.compile(r"^(?:\d{4}|-)-(\d{2})-(\d{2})$")


class ExpressionError(ValueError):
    """An expression that does not parse, or that failed or gave the wrong kind of value."""


#: Resource limits for marketers' code. Sizes and counts hold in workflows too (they are
#: deterministic); the render time limit applies to templates, which render in activities.
MAX_VALUE_CHARS = 100_000  # the longest string or list an operator may build
MAX_ITERATIONS = 10_000  # range() items one evaluation or render may go through, nested loops included
MAX_WIDTH = 1_000  # padding and wrapping widths (center, indent, wordwrap, format, ljust, ...)
MAX_TEMPLATE_CHARS = 20_000  # the source of one template
MAX_OUTPUT_CHARS = 100_000  # what one template may render
RENDER_SECONDS = 1.0  # how long one template may take to render

_WIDE = re.compile(r"\d{5,}")
_PADDING_METHODS = {"ljust", "rjust", "center", "zfill", "expandtabs", "format", "format_map"}


class _Budget:
    """What one evaluation or render may still spend: loop iterations, and for templates time."""

    def __init__(self, deadline: float | None = None):
        self.left = MAX_ITERATIONS
        self.deadline = deadline

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise SecurityError(f"more than {MAX_ITERATIONS} loop iterations")
        if self.deadline is not None and self.left % 64 == 0 and _time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {RENDER_SECONDS} s")

    def check_time(self) -> None:
        if self.deadline is not None and _time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {RENDER_SECONDS} s")


_budget: ContextVar[_Budget | None] = ContextVar("journeys_sandbox_budget", default=None)


def _counted_range(*args: int) -> Iterator[int]:
    items = range(*args)
    if len(items) > MAX_ITERATIONS:
        raise SecurityError(f"range of {len(items)} items is over the limit of {MAX_ITERATIONS}")
    budget = _budget.get() or _Budget()
    for item in items:
        budget.spend()
        yield item


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _check_widths(name: str, args: tuple, kwargs: dict) -> None:
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > MAX_WIDTH:
            raise SecurityError(f"{name} width {arg} is over the limit of {MAX_WIDTH}")
        if name in ("format", "format_map") and isinstance(arg, str) and _WIDE.search(arg):
            raise SecurityError(f"{name} width in {arg[:40]!r} is over the limit of {MAX_WIDTH}")


def _width_checked(name: str, function):
    """A filter that refuses huge widths before it allocates them (Jinja's markers kept)."""

    @functools.wraps(function)
    def checked(*args, **kwargs):
        _check_widths(name, args, kwargs)
        return function(*args, **kwargs)

    return checked


def _over(what: str, size: int) -> None:
    if size > MAX_VALUE_CHARS:
        raise SecurityError(f"{what} would make {size} items, over the limit of {MAX_VALUE_CHARS}")


def _checked_result(what: str, value: Any) -> Any:
    size = _sized(value)
    if size is not None:
        _over(what, size)
    return value


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    """Refuse a replace before it allocates: its result's size is known from the counts."""
    text, old, new = str(text), str(old), str(new)
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _over("replace", len(text) + hits * (len(new) - len(old)))


def _check_join(items: Any, separator: Any = "") -> None:
    if isinstance(items, list | tuple):
        _over("join", sum(len(str(item)) for item in items) + len(str(separator)) * max(0, len(items) - 1))


def _size_checked(name: str, function):
    """A filter whose result may not pass MAX_VALUE_CHARS; replace and join are checked before
    they allocate (Jinja's pass_* markers kept)."""

    @functools.wraps(function)
    def checked(*args, **kwargs):
        values = args[1:] if getattr(function, "jinja_pass_arg", None) else args
        if name == "replace" and len(values) >= 3:
            _check_replace(*values[:3], values[3] if len(values) > 3 else kwargs.get("count"))
        elif name == "join" and values:
            _check_join(values[0], values[1] if len(values) > 1 else kwargs.get("d", ""))
        return _checked_result(name, function(*args, **kwargs))

    return checked


# ---------------------------------------------------------------------------------------------
# Nothing: what an expression reads where the data has no value (docs/journeys.md, "What nothing does").


class _Nothing(Undefined):
    """A missing key at any depth, a null value read from data, or a missing name: falsy; `==`,
    `<`, `>`, `in` ... are false with it (`!=` and `not in` true); it iterates as empty, its length
    is 0, arithmetic with it gives it back, and reading into it (`.x`, `[0]`) gives nothing again.
    It prints as ''; the templates' kind refuses to print (`_StrictNothing`). Calling it fails. Its
    message names the path read (`'order.a.b' is undefined ('order.a' is undefined)`)."""

    __slots__ = ("_path", "_cause")

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: Any = None,
        exc: type[Exception] = UndefinedError,
        path: str | None = None,
        cause: _Nothing | None = None,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        if path is None and obj is missing and hint is None and isinstance(name, str):
            path = name  # a name the context lacks
        self._path = path
        self._cause = cause  # where the chain first met nothing, when that was before this path

    @property
    def _undefined_message(self) -> str:
        if self._undefined_hint or self._path is None:
            return super()._undefined_message
        message = f"{self._path!r} is undefined"
        return message if self._cause is None else f"{message} ({self._cause._undefined_message})"

    def _read(self, path: str | None) -> _Nothing:
        """`nothing.x` or `nothing[x]`: nothing again, named by the longer path."""
        if path is None:
            return self
        cause = self if self._cause is None else self._cause
        return type(self)(exc=self._undefined_exception, path=path, cause=cause)

    def _same(self, *args: Any) -> _Nothing:
        return self

    def _false(self, other: Any) -> bool:
        return False

    def _no_number(self) -> Any:  # the `int` and `float` filters then give their default
        raise TypeError(self._undefined_message)

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __div__ = __rdiv__ = _same
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = _same
    __pow__ = __rpow__ = __pos__ = __neg__ = __abs__ = __round__ = __getitem__ = _same
    __eq__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _false
    __int__ = __float__ = __complex__ = _no_number
    __hash__ = Undefined.__hash__

    def __ne__(self, other: Any) -> bool:
        return True

    def __repr__(self) -> str:
        return "nothing"


class _StrictNothing(_Nothing):
    """Nothing in a template: as in a condition, except that printing it (or `~`, `| string`)
    fails with its message, so no customer gets "亲爱的 ，"."""

    __slots__ = ()
    __str__ = __format__ = Undefined._fail_with_undefined_error


_ORDERING = {"lt": operator.lt, "lteq": operator.le, "gt": operator.gt, "gteq": operator.ge}


def _compare(op: str, left: Any, right: Any) -> Any:
    """One comparison (`op` as Jinja names it): with nothing it is false (`!=` and `not in` true);
    with null, where Python would raise (`None > 1`, `'a' in None`), false likewise."""
    if isinstance(left, Undefined) or isinstance(right, Undefined):
        return op in ("ne", "notin")
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if op in ("in", "notin"):
        found = False if right is None or (left is None and isinstance(right, str)) else left in right
        return found if op == "in" else not found
    if left is None or right is None:
        return False
    return _ORDERING[op](left, right)


#: Jinja's comparison tests (`select('gt', 3)`, `x is eq 1`) as `_compare`.
_COMPARISON_TESTS = {
    "==": "eq", "eq": "eq", "equalto": "eq", "!=": "ne", "ne": "ne", ">": "gt", "gt": "gt", "greaterthan": "gt",
    ">=": "gteq", "ge": "gteq", "<": "lt", "lt": "lt", "lessthan": "lt", "<=": "lteq", "le": "lteq", "in": "in",
}  # fmt: skip


def _static_path(node: nodes.Node) -> str | None:
    """What an expression reads, as written (`order.items.0.sku`), for messages; None when its
    root is computed (a call, a filter)."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _static_path(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem):
        base = _static_path(node.node)
        if base is None:
            return None
        if not isinstance(node.arg, nodes.Const):
            return f"{base}[…]"
        key = node.arg.value
        dotted = isinstance(key, int) or isinstance(key, str) and key.isidentifier()
        return f"{base}.{key}" if dotted else f"{base}[{key!r}]"
    return None


def _default(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, which also replaces null (JSON's "no value")."""
    return default_value if value is None else do_default(value, default_value, boolean)


def _length(value: Any) -> int:
    return 0 if value is None else len(value)


def _holds_nothing(value: Any) -> bool:
    """Whether a result has nothing inside (iteratively: data may nest deep)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Undefined):
            return True
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False


def _plain(value: Any) -> Any:
    """A result with nothing inside as null (a `vars` entry is kept in the workflow, and Temporal
    cannot serialise nothing). Only a value the expression built can hold nothing, so the rebuilding
    recursion is as deep as the expression."""
    if isinstance(value, Undefined):
        return None
    if isinstance(value, list | tuple | dict) and _holds_nothing(value):
        if isinstance(value, dict):
            return {_plain(key): _plain(item) for key, item in value.items()}
        return [_plain(item) for item in value]
    return value


def _nothing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


def _given(function):
    """A helper that gives nothing (or null) back when given it: `time(order.paid_at)` on an
    order without `paid_at` is nothing, and compares false."""

    @functools.wraps(function)
    def helper(value: Any, *args: Any, **kwargs: Any) -> Any:
        if _nothing(value):
            return value
        return function(value, *args, **kwargs)

    return helper


# The helpers that depend on no customer, made once (build_context runs for every evaluation).
_MINUTES = _given(lambda n: timedelta(minutes=n))
_HOURS = _given(lambda n: timedelta(hours=n))
_DAYS = _given(lambda n: timedelta(days=n))
_DURATION_OF = _given(parse_duration)


class _Generator(CodeGenerator):
    """Jinja's code generator, with every `~` concatenation's result checked against the limit
    (a `~` doubling in a loop grew to gigabytes); comparisons through `_compare` (Jinja writes
    Python's operators, which raise on `None > 1`); reading (`.x`, `[x]`) and printing told the
    path written, for the message of a missing or null value."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_concat(")
        super().visit_Concat(node, frame)
        self.write(")")

    @optimizeconst
    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        self.write("environment.compare_values(")
        self.visit(node.expr, frame)
        for operand in node.ops:
            self.write(f", {operand.op!r}, ")
            self.visit(operand.expr, frame)
        self.write(")")

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Frame) -> None:
        self.write("environment.getattr(")
        self.visit(node.node, frame)
        self.write(f", {node.attr!r}, {_static_path(node)!r})")

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if isinstance(node.arg, nodes.Slice):  # slices bypass getitem, as in Jinja
            super().visit_Getitem(node, frame)
            return
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", ")
        self.visit(node.arg, frame)
        self.write(f", {_static_path(node)!r})")

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.printed(")

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write(f", {_static_path(node)!r})")
        super()._output_child_post(node, frame, finalize)


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, refusing unsafe attribute access loudly instead of yielding an
    undefined value, so an escape attempt fails with a message naming it; and refusing resource
    abuse: string or list repetition past MAX_VALUE_CHARS, huge powers, huge paddings, loops past
    MAX_ITERATIONS. Intercepting the operators also stops Jinja folding `'x' * 10**9` at parse time.

    The data an expression reads shows only its contents: a mapping its keys, a list its items,
    never a method of either (`order.items` is the order's items, or nothing). Nothing and null
    in operators: see `_Nothing`, `_compare`, `call_binop`."""

    intercepted_binops = frozenset({"*", "**", "+", "-", "/", "//", "%"})
    intercepted_unops = frozenset({"-", "+"})
    code_generator_class = _Generator

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.globals["range"] = _counted_range
        del self.globals["lipsum"]  # placeholder text, and 55 s for lipsum(n=100000)
        self.filters["default"] = self.filters["d"] = _default
        self.filters["length"] = self.filters["count"] = _length
        for name, op in _COMPARISON_TESTS.items():
            self.tests[name] = functools.partial(_compare, op)
        for name in ("center", "indent", "wordwrap", "format"):
            self.filters[name] = _width_checked(name, self.filters[name])
        for name, function in list(self.filters.items()):
            self.filters[name] = _size_checked(name, function)

    def checked_concat(self, value: Any) -> Any:
        return _checked_result("~", value)

    def compare_values(self, left: Any, *pairs: Any) -> Any:
        """`left op1 right1 op2 right2 ...`, chained as Python chains comparisons."""
        result: Any = True
        for index in range(0, len(pairs), 2):
            right = pairs[index + 1]
            result = _compare(pairs[index], left, right)
            if not result:
                return result
            left = right
        return result

    def _missing(self, obj: Any, name: Any, path: str | None) -> Any:
        return self.undefined(obj=obj, name=name, path=path)

    def _found(self, obj: Any, name: Any, value: Any, path: str | None) -> Any:
        """A value read from data: null (JSON's "no value") reads as nothing."""
        if value is not None:
            return value
        return self.undefined(f"{path or name!r} is null", obj=obj, name=name, path=path)

    def getattr(self, obj: Any, attribute: str, path: str | None = None) -> Any:
        """`order.items` is the order's items, or nothing when it has none: never the dict
        method. A mapping (the order, the event's data, a customer's traits) shows its keys, a
        list its items, and a null value in either reads as nothing; other values (strings,
        times) keep their attributes. `_x` names that are attributes of the container are refused
        loudly, as the sandbox refuses them anywhere."""
        if isinstance(obj, Undefined):
            return obj._read(path) if isinstance(obj, _Nothing) else obj
        if isinstance(obj, Mapping):
            if attribute in obj:
                return self._found(obj, attribute, obj[attribute], path)
        elif not isinstance(obj, list | tuple):
            value = super().getattr(obj, attribute)
            return self._missing(obj, attribute, path) if isinstance(value, Undefined) else value
        if attribute.startswith("_") and hasattr(obj, attribute):
            return super().getattr(obj, attribute)  # refused: see unsafe_undefined
        return self._missing(obj, attribute, path)

    def getitem(self, obj: Any, argument: Any, path: str | None = None) -> Any:
        """`order['items']`, `order.items[0]`: as `getattr`, a mapping's key or a list's item, or
        nothing."""
        if isinstance(obj, Undefined):
            return obj._read(path) if isinstance(obj, _Nothing) else obj
        if isinstance(obj, Mapping | list | tuple):
            try:
                value = obj[argument]
            except (TypeError, LookupError):
                return self._missing(obj, argument, path)
            return self._found(obj, argument, value, path)
        value = super().getitem(obj, argument)
        return self._missing(obj, argument, path) if isinstance(value, Undefined) else value

    def printed(self, value: Any, path: str | None) -> Any:
        """A value a template prints: null is refused like nothing (no "亲爱的None，")."""
        if value is None:
            raise UndefinedError(f"{path!r} is null" if path else "a printed value is null")
        return value

    def unsafe_undefined(self, obj: Any, attribute: str):
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        """Arithmetic with nothing gives it back; with null (where Python would raise), nothing."""
        for operand in (left, right):
            if isinstance(operand, Undefined):
                return operand
        if left is None or right is None:
            return self.undefined(hint=f"a null value in {operator!r}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                size = _sized(seq)
                if size is not None and isinstance(times, int) and size * times > MAX_VALUE_CHARS:
                    raise SecurityError(f"repetition to {size * times} items is over the limit of {MAX_VALUE_CHARS}")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and max(left.bit_length(), 1) * right > 10_000:
                raise SecurityError(f"{left} ** {right} is too large a number")
        elif operator == "+":
            sizes = _sized(left), _sized(right)
            if None not in sizes and sum(sizes) > MAX_VALUE_CHARS:
                raise SecurityError(f"joining to {sum(sizes)} items is over the limit of {MAX_VALUE_CHARS}")
        return super().call_binop(context, operator, left, right)

    def call_unop(self, context, operator: str, arg: Any) -> Any:
        if isinstance(arg, Undefined):
            return arg
        if arg is None:
            return self.undefined(hint=f"a null value in {operator!r}")
        return super().call_unop(context, operator, arg)

    def wrap_str_format(self, value: Any):
        """`'{:>9}'.format(x)` in a template: the sandbox wraps str.format here; refuse huge widths."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        _check_widths(value.__name__, (value.__self__,), {})
        return wrapped

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        if isinstance(__obj, _Nothing):  # `order.keys()`: data has no methods; `x.append(1)` is refused as before
            container, missing_name = __obj._undefined_obj, __obj._undefined_name
            if isinstance(missing_name, str) and modifies_known_mutable(container, missing_name):
                raise SecurityError(
                    f"access to attribute {missing_name!r} of {type(container).__name__!r} object is unsafe"
                )
            __obj._fail_with_undefined_error()
        name, target = getattr(__obj, "__name__", None), getattr(__obj, "__self__", None)
        if isinstance(target, str):
            if name in _PADDING_METHODS:
                _check_widths(name, (target, *args), kwargs)
            elif name == "replace" and len(args) >= 2:
                _check_replace(target, *args[:3])
            elif name == "join" and args:
                _check_join(args[0], target)
        budget = _budget.get()
        if budget is not None:
            budget.check_time()
        return _checked_result(str(name or "call"), super().call(__context, __obj, *args, **kwargs))


# Conditions read free-form data: a missing field is nothing rather than an error. Templates too,
# except that printing nothing fails.
_CONDITIONS = _Sandbox(undefined=_Nothing)
TEMPLATES_TEXT = _Sandbox(undefined=_StrictNothing, autoescape=False)
TEMPLATES_HTML = _Sandbox(undefined=_StrictNothing, autoescape=True)


# ---------------------------------------------------------------------------------------------
# Compiled once: every expression and template is compiled when its definition loads (validate,
# worker start-up, the router's and the API's snapshots) and kept here by its source. Evaluating in
# a workflow is then a dictionary lookup and a call: no parsing, no code generation, no import, no
# lock. The dictionaries are plain dicts (a lookup or an insert is atomic in CPython), shared by the
# workflow sandbox because workflows import this module passed through.

_EXPRESSIONS: dict[str, Any] = {}
_TEMPLATES: dict[tuple[str, bool], Any] = {}


def _compile_expression(source: str):
    compiled = _EXPRESSIONS.get(source)
    if compiled is None:
        compiled = _EXPRESSIONS[source] = _CONDITIONS.compile_expression(source, undefined_to_none=True)
    return compiled


def _compile_template(source: str, html: bool):
    compiled = _TEMPLATES.get((source, html))
    if compiled is None:
        environment = TEMPLATES_HTML if html else TEMPLATES_TEXT
        compiled = _TEMPLATES[(source, html)] = environment.from_string(source)
    return compiled


def _expression(source: str):
    """The compiled expression. An instance running a snapshot this process did not load (one
    started before the definitions changed) compiles it here once per process; in a workflow that
    happens outside the sandbox's restrictions and import machinery, so it cannot deadlock."""
    compiled = _EXPRESSIONS.get(source)
    if compiled is not None:
        return compiled
    try:
        if _workflow.in_workflow():
            with _workflow.unsafe.sandbox_unrestricted(), _workflow.unsafe.imports_passed_through():
                return _compile_expression(source)
        return _compile_expression(source)
    except TemplateSyntaxError as err:
        raise ExpressionError(f"expression {source!r} does not parse: {err.message}") from err


def compiled_counts() -> tuple[int, int]:
    """How many expressions and templates this process has compiled (for tests and the worker log)."""
    return len(_EXPRESSIONS), len(_TEMPLATES)


def render_limited(source: str, data: Mapping[str, Any], html: bool = False) -> str:
    """Render a template under the limits: its size, its output, its loops and its time."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise SecurityError(f"the template is {len(source)} characters, over the limit of {MAX_TEMPLATE_CHARS}")
    template = _compile_template(source, html)
    token = _budget.set(_Budget(deadline=_time.monotonic() + RENDER_SECONDS))
    try:
        parts, size = [], 0
        for chunk in template.generate(data):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise SecurityError(f"the output is over the limit of {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
            _budget.get().check_time()
        return "".join(parts)
    finally:
        _budget.reset(token)


def check_expression(source: str) -> str | None:
    """Compile an expression for later evaluation: its parse error, or None when it compiled."""
    try:
        _compile_expression(source)
    except TemplateSyntaxError as err:
        return f"expression {source!r} does not parse: {err.message}"
    return None


def check_template(source: str, html: bool = False) -> str | None:
    """Compile a template for later rendering: its parse error (or its size over the limit), or
    None when it compiled."""
    if len(source) > MAX_TEMPLATE_CHARS:
        return f"the template is {len(source)} characters, over the limit of {MAX_TEMPLATE_CHARS}"
    try:
        _compile_template(source, html)
    except TemplateSyntaxError as err:
        return f"line {err.lineno}: {err.message}"
    return None


@lru_cache(maxsize=256)
def zone(name: str | None) -> ZoneInfo:
    """The time zone `name` (Asia/Shanghai when empty). Workflows get zones here: the workflow
    sandbox only lets ZoneInfo through a passed-through module like this one."""
    return ZoneInfo(name or "Asia/Shanghai")


class LocalTime(datetime):
    """A moment shown in the customer's time zone whose arithmetic is elapsed time: adding
    `hours(72)` is 72 real hours, also across a daylight-saving change (Python's own aware datetimes
    add wall-clock time in their zone), and subtracting two moments gives the real time between
    them. Calendar alignment happens only where a function says so (`yearly()`, local formatting)."""

    @classmethod
    def of(cls, moment: datetime, tz: ZoneInfo) -> LocalTime:
        local = moment.astimezone(tz)
        return cls(
            local.year, local.month, local.day, local.hour, local.minute, local.second, local.microsecond,
            tzinfo=tz, fold=local.fold,
        )  # fmt: skip

    def __add__(self, other: Any) -> LocalTime:
        if isinstance(other, timedelta):
            return LocalTime.of(_utc(self) + other, self.tzinfo)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, timedelta):
            return LocalTime.of(_utc(self) - other, self.tzinfo)
        if isinstance(other, datetime) and other.tzinfo is not None:
            return _utc(self) - _utc(other)
        return NotImplemented

    def __rsub__(self, other: Any) -> Any:
        if isinstance(other, datetime) and other.tzinfo is not None:
            return _utc(other) - _utc(self)
        return NotImplemented


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC as a plain datetime (a LocalTime's own astimezone would stay a LocalTime)."""
    plain = datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond,
        tzinfo=moment.tzinfo, fold=moment.fold,
    )  # fmt: skip
    return plain.astimezone(UTC)


def local_time(value: Any, tz: ZoneInfo) -> LocalTime:
    """A time as a LocalTime in `tz` (see to_datetime for what is read)."""
    return LocalTime.of(to_datetime(value, tz), tz)


def to_datetime(value: Any, tz: ZoneInfo) -> datetime:
    """A datetime, date or RFC 3339 string as an aware datetime; naive values are read in `tz`."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            moment = datetime.fromisoformat(text)
        except ValueError as err:
            raise ExpressionError(f"{value!r} is not an RFC 3339 time") from err
    else:
        raise ExpressionError(f"{value!r} is not a time")
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def next_yearly(month_day: str, now: datetime, tz: ZoneInfo, at: str = "00:00", before: str = "0d") -> datetime:
    """The first `(anniversary − before) at `at` local` strictly after `now`."""
    match = _MONTH_DAY.match(str(month_day or ""))
    if not match:
        raise ExpressionError(f"{month_day!r} is not a date like YYYY-MM-DD or --MM-DD")
    month, day = int(match.group(1)), int(match.group(2))
    hour, minute = (int(part) for part in at.split(":"))
    lead = parse_duration(before)
    local_now = now.astimezone(tz)
    for year in range(local_now.year, local_now.year + 3):
        kept_day = 28 if (month, day) == (2, 29) and not calendar.isleap(year) else day
        # Wall-clock arithmetic: "3 days before at 10:00" stays 10:00 across a DST change.
        candidate = datetime(year, month, kept_day, hour, minute, tzinfo=tz) - lead
        if candidate > local_now:
            return candidate
    raise ExpressionError(f"no yearly date found for {month_day!r}")  # unreachable for real dates


def build_context(
    *,
    tz: ZoneInfo,
    now: datetime,
    event: Mapping[str, Any] | None = None,
    order: Mapping[str, Any] | None = None,
    customer: Mapping[str, Any] | None = None,
    vars: Mapping[str, Any] | None = None,
    entry: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The names an expression can use. `event` is the event at hand (in a wait_for's on_event
    branch, the awaited one) and `entry` the instance's entry event (the same as `event` when not
    given)."""
    local_now = LocalTime.of(now, tz)

    def localised(given: Mapping[str, Any] | None) -> dict[str, Any]:
        found = dict(given or {})
        if "occurred_at" in found:
            found["occurred_at"] = local_time(found["occurred_at"], tz)
        return found

    def time(value: Any) -> Any:  # the two helpers bound to the customer's zone and now
        return value if _nothing(value) else local_time(value, tz)

    def yearly(value: Any, time: str = "00:00", before: str = "0d") -> Any:
        return value if _nothing(value) else LocalTime.of(next_yearly(value, local_now, tz, time, before), tz)

    def replenish_at(value: Any) -> Any:  # core.products: when the order's first product runs out
        moment = None if _nothing(value) else _replenish_at(value)
        return None if moment is None else LocalTime.of(moment, tz)

    event = localised(event)
    return {
        "event": event,
        "entry": localised(entry) if entry is not None else event,
        "order": dict(order or {}),
        "customer": dict(customer or {}),
        "vars": dict(vars or {}),
        "now": local_now,
        "time": time,
        "minutes": _MINUTES,
        "hours": _HOURS,
        "days": _DAYS,
        "duration": _DURATION_OF,
        "yearly": yearly,
        "replenish_at": replenish_at,
    }


#: The data a message renders with (besides `shop`, which render_message adds), in the order a
#: send request carries it.
MESSAGE_NAMES = ("event", "entry", "order", "vars", "customer")


def message_context(
    context: Mapping[str, Any], *, customer: Mapping[str, Any] | None = None, entry: bool = True
) -> dict[str, Any]:
    """The one message context: the data of an expression context (build_context's) or of a
    message context passed on, without the helpers, which a template does not get. The workflow
    makes it for a send (with the customer's RFM only, and no `entry` before revision 4), the send
    activity renders with it (adding the customer's record as the store has it then), and preview
    renders with it as a send would. `customer`, given, stands in for the context's; a name the
    context lacks is left out."""
    data = {name: context[name] for name in MESSAGE_NAMES if name in context and (entry or name != "entry")}
    if customer is not None:
        data["customer"] = customer
    return data


#: What an expression raises when it meets data it cannot handle (a missing field, a wrong type, a
#: limit): a fault of the definition or the data, recorded as the instance's outcome. Anything
#: else (the workflow sandbox refusing an access, an import, a bug) is not the marketer's: it
#: propagates, so in a workflow it fails the workflow task and Temporal retries it after a fix.
DATA_ERRORS: tuple[type[Exception], ...] = (
    TemplateError,
    TypeError,
    ValueError,
    LookupError,
    ArithmeticError,
    AttributeError,
)


def evaluate(source: str, context: Mapping[str, Any]) -> Any:
    """The value of an expression. A failure on the data becomes an ExpressionError naming the
    expression; any other error (see DATA_ERRORS) is raised as it is."""
    compiled = _expression(source)
    token = _budget.set(_Budget())
    try:
        return _plain(compiled(**context))
    except _workflow.NondeterminismError:
        raise  # the sandbox refused something: a fault of the code, not of the data
    except DATA_ERRORS as err:  # ExpressionError from a helper (time(), yearly()) included
        raise ExpressionError(f"expression {source!r} failed: {err}") from err
    finally:
        _budget.reset(token)


def evaluate_time(source: str, context: Mapping[str, Any], tz: ZoneInfo) -> datetime:
    value = evaluate(source, context)
    if value is None:
        raise ExpressionError(f"expression {source!r} gave no time")
    return to_datetime(value, tz)
