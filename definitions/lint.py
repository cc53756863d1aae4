"""Mistakes a journey can parse with and still make: what `journeys validate` finds beyond the
schema, each as `(path, message)` for the loader to place at its file and line.

Errors (the journey is not loaded):

- an expression that does not parse (or names a filter or test there is not);
- a name no expression can see (`ordr.amount`), with the names there are;
- a `vars` entry read before it is evaluated (vars run once, in order, after `entry.condition`),
  or one that does not exist;
- a wait, a `wait_for` timeout, an `entry.max_age` or a `send.max_lateness` that is zero or
  negative (a `wait_until` offset may be negative);
- a journey without steps, an `if` with neither `then` nor `else`, a split that does nothing;
- a transactional send that hands out a resource;
- steps that can never run, after an `exit`, a `repeat`, or a step every branch of which ends.

Warnings (loaded all the same): a field of a declared event type's `data` that its JSON Schema
(events.yaml) does not have, a field no event has (`event.dat`), and a field the loyalty facts do
not have (`customer.tier.level`: a tier has name, title and until; `customer.points` is a number).

Templates are checked for their root names only: they see definitions/render.py's TEMPLATE_NAMES
(the data of the send and `shop`), and may set their own names.

A template's `aliyun_sms` section is checked against the shop's sms.yaml (`aliyun_problems`): its
code registered, every parameter the registered text declares filled and none other given, its
signature registered, a marketing text carrying the 退订 text; and sms.yaml itself
(`registry_problems`): codes, parameter names and marketing texts as Aliyun accepts them.

lint_journey is the one place that knows a journey's expressions and where they are: a new
expression field is checked (compiled, then linted) by adding it there.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.parser import Parser

from core.records import Event
from core.sms_registry import SmsRegistry
from definitions.events import EVENTS_FILE, EventCatalog
from definitions.expressions import (
    _CONDITIONS,
    TEMPLATES_TEXT,
    build_context,
    check_expression,
    zone,
)
from definitions.render import LOYALTY_FIELDS, TEMPLATE_NAMES, is_link_url
from definitions.schema import (
    AliyunSmsTemplate,
    ExitStep,
    IfStep,
    Journey,
    RepeatStep,
    SendStep,
    SplitStep,
    WaitForStep,
    WaitStep,
    WaitUntilStep,
    parse_duration,
)

#: The schema keywords that make a field's presence too subtle to judge here: no warning then.
_COMPOSED = ("allOf", "anyOf", "oneOf", "not", "$ref", "$dynamicRef", "if", "dependentSchemas", "unevaluatedProperties")


@dataclass(frozen=True)
class Finding:
    where: str  # the dotted path in the file, e.g. `steps[1].if.condition`
    message: str
    warning: bool = False


@lru_cache(maxsize=1)
def _context_names() -> frozenset[str]:
    """The names build_context gives every expression (the data and the helpers)."""
    return frozenset(build_context(tz=zone(None), now=datetime(2000, 1, 1, tzinfo=UTC)))


def expression_names() -> frozenset[str]:
    """Every root name an expression may use: the context's (`entry`, the entry event, among them)
    and the sandbox's globals (read each time: a test may add one)."""
    return _context_names() | frozenset(_CONDITIONS.globals)


def template_names() -> frozenset[str]:
    return TEMPLATE_NAMES | frozenset(TEMPLATES_TEXT.globals)


def _unknown_name(name: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown name {name!r} (known: {', '.join(sorted(known))}){hint}"


def _parse_expression(source: str) -> nodes.Template | None:
    """The expression as a template AST (as `compile_expression` parses it); None when it does
    not parse (check_expression, run first, reports that)."""
    try:
        parser = Parser(_CONDITIONS, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            return None
    except TemplateSyntaxError:
        return None
    template = nodes.Template([nodes.Output([expr])], lineno=1)
    template.set_environment(_CONDITIONS)
    return template


def _undeclared(ast: nodes.Template) -> set[str] | None:
    """The root names a parsed expression or template reads; None when it does not compile (an
    unknown filter or test: check_expression, or for a template the loader, reports that)."""
    try:
        return meta.find_undeclared_variables(ast)
    except TemplateSyntaxError:  # TemplateAssertionError included
        return None


def template_problems(source: str) -> list[str]:
    """The names a template reads that its data never has, and a `link()` of a written-out URL
    that is not http(s) (a template that does not parse is the loader's to report)."""
    try:
        ast = TEMPLATES_TEXT.parse(source)
    except TemplateSyntaxError:
        return []
    names = _undeclared(ast)
    if names is None:
        return []
    known = template_names()
    found = [_unknown_name(name, known) for name in sorted(names - known)]
    for call in ast.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name == "link" and call.args:
            url = call.args[0]
            if isinstance(url, nodes.Const) and not (isinstance(url.value, str) and is_link_url(url.value.strip())):
                found.append(f"link({url.value!r}): not an http(s) URL (write it in full, https://...)")
    return found


# ---------------------------------------------------------------------------------------------
# Aliyun SMS: a template's registered template, and sms.yaml itself

#: A `${...}` in a registered text, whatever its name (core.sms_registry.PARAMETER takes valid ones).
_ANY_PARAMETER = re.compile(r"\$\{([^}]*)\}")
#: Aliyun's rule for a variable's name: 1 to 25 letters, digits and underscores, a letter first.
_PARAMETER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,24}$")
#: Names Aliyun does not take for a variable.
_RESERVED_PARAMETERS = frozenset({"email", "mobile", "id", "nick", "site"})
_TEMPLATE_CODE = re.compile(r"^SMS_[0-9A-Za-z_]{1,40}$")
_USES_LINK = re.compile(r"\blink\s*\(")


def aliyun_problems(aliyun: AliyunSmsTemplate, registry: SmsRegistry) -> list[tuple[tuple[str, ...], str]]:
    """The mistakes of a template's `aliyun_sms` section against sms.yaml, each as (where in the
    template file, message): what Aliyun would refuse at every send, found before one is made.
    Its params are checked as templates by the loader, with or without sms.yaml."""
    found: list[tuple[tuple[str, ...], str]] = []
    registered = registry.templates.get(aliyun.template_code)
    if registered is None:
        known = ", ".join(sorted(registry.templates)) or "none"
        found.append(
            (
                ("aliyun_sms", "template_code"),
                f"{aliyun.template_code!r} is not registered in sms.yaml (registered: {known})",
            )
        )
    else:
        declared = registered.parameters
        missing = [name for name in declared if name not in aliyun.params]
        if missing:
            found.append(
                (("aliyun_sms", "params"), f"{aliyun.template_code} declares {', '.join(missing)}, not filled here "
                 f"(Aliyun refuses a send without them)")
            )  # fmt: skip
        for name in aliyun.params:
            if name not in declared:
                found.append(
                    (("aliyun_sms", "params", name), f"{aliyun.template_code}'s text has no ${{{name}}} "
                     f"(it declares: {', '.join(declared) or 'none'})")
                )  # fmt: skip
        for name, source in aliyun.params.items():
            # Aliyun takes no URL in a variable: link() gives the code, the text holds its base.
            if _USES_LINK.search(source) and f"/l/${{{name}}}" not in registered.text:
                found.append(
                    (("aliyun_sms", "params", name), f"link() in an Aliyun parameter gives the short link's code "
                     f"alone (Aliyun takes no URL in a variable): {aliyun.template_code}'s registered text must "
                     f"hold the link's base before it, e.g. https://s.shop.example/l/${{{name}}}")
                )  # fmt: skip
    if aliyun.sign_name not in registry.signatures:
        known = ", ".join(registry.signatures) or "none"
        found.append(
            (
                ("aliyun_sms", "sign_name"),
                f"{aliyun.sign_name!r} is not a signature sms.yaml lists (signatures: {known})",
            )
        )
    return found


def registry_problems(registry: SmsRegistry) -> list[tuple[tuple[Any, ...], str]]:
    """The mistakes of sms.yaml itself, each as (where in the file, message)."""
    found: list[tuple[tuple[Any, ...], str]] = []
    for i, signature in enumerate(registry.signatures):
        if not signature.strip() or any(mark in signature for mark in "【】[]"):
            found.append((("signatures", i), f"{signature!r}: a signature is its name alone, without 【】"))
    for code, registered in registry.templates.items():
        if not _TEMPLATE_CODE.match(code):
            found.append((("templates", code), f"{code!r} is not an Aliyun template code like SMS_123456789"))
        for name in dict.fromkeys(_ANY_PARAMETER.findall(registered.text)):
            if not _PARAMETER_NAME.match(name) or name.lower() in _RESERVED_PARAMETERS:
                found.append(
                    (("templates", code, "text"), f"${{{name}}} is not a parameter name Aliyun takes (1 to 25 letters, "
                     "digits or _, a letter first; not email, mobile, id, nick or site)")
                )  # fmt: skip
        if registered.kind == "marketing" and registry.opt_out not in registered.text:
            found.append(
                (("templates", code, "text"), f"a marketing template must carry the opt-out text {registry.opt_out!r}")
            )
    return found


# ---------------------------------------------------------------------------------------------
# What an expression reads


def _chain(node: nodes.Node) -> tuple[Any, ...] | None:
    """`event.data['foo'].bar` → `('event', 'data', 'foo', 'bar')`; None when some part is computed."""
    parts: list[Any] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str | int)
            and not isinstance(node.arg.value, bool)
        ):
            parts.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            parts.append(node.name)
            return tuple(reversed(parts))
        else:
            return None


def _reads(node: nodes.Node) -> Iterator[tuple[Any, ...]]:
    """Every path an expression reads from a root name, each as its longest chain of constant
    parts: `vars.a + event.data.x` gives `('vars', 'a')` and `('event', 'data', 'x')`."""
    if isinstance(node, nodes.Getattr | nodes.Getitem | nodes.Name):
        chain = _chain(node)
        if chain is not None:
            yield chain
            return
    for child in node.iter_child_nodes():
        yield from _reads(child)


@dataclass(frozen=True)
class _Scope:
    """What names mean where an expression is evaluated."""

    event_types: tuple[str, ...]  # the type(s) `event` may be there
    entry_types: tuple[str, ...]  # the entry event's type(s)
    vars_ready: tuple[str, ...]  # the vars evaluated by then
    vars_all: tuple[str, ...]  # the journey's vars, in order
    reading: str  # what is evaluated, for the message ("entry.condition", "vars.a", "")


_EVENT_FIELDS = tuple(Event.model_fields)


def _expression_findings(source: str | None, where: str, scope: _Scope, catalog: EventCatalog) -> list[Finding]:
    """An expression's mistakes at `where`: that it does not compile (and then nothing more), else
    the names and fields it reads that are not there. Compiling it also keeps it for evaluation."""
    if not source:
        return []
    problem = check_expression(source)
    if problem:
        return [Finding(where, problem)]
    ast = _parse_expression(source)
    names = _undeclared(ast) if ast is not None else None
    if ast is None or names is None:
        return []
    found: list[Finding] = []
    known = expression_names()
    for name in sorted(names - known):
        found.append(Finding(where, _unknown_name(name, known)))
    seen: set[tuple[Any, ...]] = set()
    for chain in _reads(ast):
        if chain in seen:
            continue
        seen.add(chain)
        root = chain[0]
        if root == "vars" and len(chain) > 1 and isinstance(chain[1], str):
            found.extend(_var_finding(chain[1], where, scope))
        elif root in ("event", "entry") and len(chain) > 1:
            types = scope.event_types if root == "event" else scope.entry_types
            found.extend(_field_findings(chain, types, where, catalog))
        elif root == "customer" and len(chain) > 2 and chain[2] not in LOYALTY_FIELDS.get(chain[1], (chain[2],)):
            fields = ", ".join(LOYALTY_FIELDS[chain[1]]) or "none: it is a number"
            found.append(Finding(where, f"customer.{chain[1]} has no field {chain[2]!r} (fields: {fields})", True))
    return list(dict.fromkeys(found))  # `vars.b.x or vars.b` says it once


def _var_finding(name: str, where: str, scope: _Scope) -> list[Finding]:
    if name in scope.vars_ready:
        return []
    if name not in scope.vars_all:
        defined = ", ".join(scope.vars_all) or "none"
        close = difflib.get_close_matches(name, scope.vars_all, n=1)
        hint = f"; did you mean vars.{close[0]}?" if close else ""
        return [Finding(where, f"unknown var {name!r} (vars: {defined}){hint}")]
    if scope.reading == f"vars.{name}":
        return [Finding(where, f"vars.{name} reads itself: a var is evaluated once, from the vars before it")]
    if scope.reading.startswith("vars."):
        return [
            Finding(
                where,
                f"vars.{name} is used before it is defined: vars are evaluated once, in order, "
                f"and {name} comes after {scope.reading.removeprefix('vars.')}",
            )
        ]
    return [Finding(where, f"vars.{name} is used before it is defined: {scope.reading} is evaluated before vars")]


def dotted(parts: tuple[Any, ...]) -> str:
    """`('steps', 2, 'send')` → `steps[2].send`, as a problem names a path (definitions/loader.py
    too); `(top)` for the empty path, a file's top level."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _field_findings(chain: tuple[Any, ...], types: tuple[str, ...], where: str, catalog: EventCatalog) -> list[Finding]:
    root, first = chain[0], chain[1]
    if isinstance(first, str) and first not in _EVENT_FIELDS:
        close = difflib.get_close_matches(first, _EVENT_FIELDS, n=1)
        hint = f"; did you mean {root}.{close[0]}?" if close else ""
        return [
            Finding(
                where, f"{dotted(chain[:2])}: an event has no field {first!r} ({', '.join(_EVENT_FIELDS)}){hint}", True
            )
        ]
    if first != "data" or len(chain) < 3 or not types:
        return []
    misses = []
    for event_type in types:
        declaration = catalog.declared.get(event_type)
        schema = declaration.data_schema if declaration else None
        miss = _missing(schema, chain[2:]) if schema is not None else None
        if miss is None:
            return []  # a type that may have it (or has no schema: built-in types have none)
        misses.append(miss)
    depth = min(depth for depth, _ in misses)
    fields = sorted({name for d, names in misses if d == depth for name in names})
    missing = chain[2 + depth]
    path = dotted(chain[: 3 + depth])
    owners = "the schema of " + types[0] if len(types) == 1 else "the schemas of " + ", ".join(types)
    close = difflib.get_close_matches(str(missing), fields, n=1)
    hint = f"; did you mean {dotted((*chain[: 2 + depth], close[0]))}?" if close else ""
    return [
        Finding(
            where,
            f"{path}: no field {missing!r} in {owners} ({EVENTS_FILE}: {', '.join(fields) or 'none'}){hint}",
            True,
        )
    ]


def _missing(schema: Any, parts: tuple[Any, ...]) -> tuple[int, list[str]] | None:
    """Where a path into `data` leaves what `schema` allows: (the index of the part no object
    schema along the path has, that schema's fields), or None when every part may be there (a
    schema that declares no properties, or allows more, or that is too subtle to judge)."""
    for depth, part in enumerate(parts):
        if not isinstance(schema, dict) or any(keyword in schema for keyword in _COMPOSED):
            return None
        if isinstance(part, int):
            items = schema.get("items")
            if schema.get("type") != "array" or not isinstance(items, dict):
                return None
            schema = items
            continue
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            return None  # nothing declared: any field may be there
        if part in properties:
            schema = properties[part]
            continue
        extra = schema.get("additionalProperties")
        if extra is not None and extra is not False:
            return None
        patterns = schema.get("patternProperties") or {}
        if any(re.search(pattern, part) for pattern in patterns):
            return None
        return depth, sorted(properties)
    return None


# ---------------------------------------------------------------------------------------------
# The journey


def _positive(value: str | None, where: str, what: str) -> list[Finding]:
    if value is None:
        return []
    try:
        duration = parse_duration(value)
    except ValueError:
        return []  # pydantic reported it
    if duration > timedelta(0):
        return []
    return [Finding(where, f"{what} {value!r} is not positive: it must be longer than zero")]


def _ends(steps: list[Any]) -> bool:
    """Whether running `steps` always ends the run (an exit or a repeat on every path)."""
    return any(_step_ends(step) for step in steps)


def _step_ends(step: Any) -> bool:
    if isinstance(step, ExitStep | RepeatStep):
        return True
    if isinstance(step, IfStep):
        return _ends(step.if_.then) and _ends(step.if_.else_)
    if isinstance(step, WaitForStep):
        return _ends(step.wait_for.on_event) and _ends(step.wait_for.on_timeout)
    if isinstance(step, SplitStep):
        return bool(step.split.branches) and all(_ends(branch.steps) for branch in step.split.branches)
    return False


def _ending(step: Any, path: str) -> str:
    if isinstance(step, ExitStep):
        return f"after exit at {path}"
    if isinstance(step, RepeatStep):
        return f"after repeat at {path}"
    kind = {IfStep: "if", WaitForStep: "wait_for", SplitStep: "split"}[type(step)]
    return f"every branch of the {kind} at {path} ends the journey"


def lint_journey(journey: Journey, catalog: EventCatalog) -> list[Finding]:
    """The mistakes of one journey beyond its schema and references (see the module's doc)."""
    found: list[Finding] = []
    names = tuple(journey.vars)
    entry_types = tuple(journey.entry.events)

    def scope(reading: str, ready: tuple[str, ...], event_types: tuple[str, ...] = entry_types) -> _Scope:
        return _Scope(event_types, entry_types, ready, names, reading)

    found += _expression_findings(journey.entry.condition, "entry.condition", scope("entry.condition", ()), catalog)
    for i, (name, source) in enumerate(journey.vars.items()):
        found += _expression_findings(source, f"vars.{name}", scope(f"vars.{name}", names[:i]), catalog)
    found += _positive(getattr(journey.entry, "max_age", None), "entry.max_age", "max_age")
    if journey.conversion is not None:
        where = "goal.within" if not isinstance(journey.goal, str) else "conversion_window"
        found += _positive(journey.conversion.within, where, "the goal's window")
    if not journey.steps:
        found.append(Finding("steps", "no steps: a journey needs at least one"))

    # Its own walk, not schema.walk_steps: a step's checks need what walk_steps does not give, the
    # list it is in (the step before it, for the unreachable rest) and the type `event` has there
    # (the awaited event inside a wait_for's on_event).
    def walk(steps: list[Any], path: str, event_types: tuple[str, ...]) -> None:
        after = scope("", names, event_types)
        ended = None  # the step that ends every run through this list, if any yet
        for i, step in enumerate(steps):
            here = f"{path}[{i}]"
            if ended is None and i and _step_ends(steps[i - 1]):
                ended = i - 1  # one line for the unreachable rest; its own mistakes are still named
                found.append(Finding(here, f"unreachable: {_ending(steps[ended], f'{path}[{ended}]')}"))
            if isinstance(step, WaitStep):
                found.extend(_positive(step.wait, f"{here}.wait", "wait"))
            elif isinstance(step, WaitUntilStep):
                found.extend(_expression_findings(step.wait_until.at, f"{here}.wait_until.at", after, catalog))
            elif isinstance(step, WaitForStep):
                spec = step.wait_for
                found.extend(_positive(spec.timeout, f"{here}.wait_for.timeout", "timeout"))
                walk(spec.on_event, f"{here}.wait_for.on_event", (spec.event,))
                walk(spec.on_timeout, f"{here}.wait_for.on_timeout", event_types)
            elif isinstance(step, SendStep):
                spec = step.send
                found.extend(_expression_findings(spec.deadline, f"{here}.send.deadline", after, catalog))
                found.extend(
                    _positive(getattr(spec, "max_lateness", None), f"{here}.send.max_lateness", "max_lateness")
                )
                if spec.resource and (spec.category or journey.category) == "transactional":
                    found.append(
                        Finding(
                            f"{here}.send.resource",
                            f"a transactional send hands out {spec.resource!r}: transactional messages carry no "
                            "offers (send it as marketing: `category: marketing`)",
                        )
                    )
            elif isinstance(step, IfStep):
                found.extend(_expression_findings(step.if_.condition, f"{here}.if.condition", after, catalog))
                if not step.if_.then and not step.if_.else_:
                    found.append(Finding(f"{here}.if", "neither then nor else has steps: the if does nothing"))
                walk(step.if_.then, f"{here}.if.then", event_types)
                walk(step.if_.else_, f"{here}.if.else", event_types)
            elif isinstance(step, SplitStep):
                spec = step.split
                if not spec.holdout and not any(branch.steps for branch in spec.branches):
                    found.append(
                        Finding(
                            f"{here}.split",
                            "no holdout and no branch with steps: the split does nothing"
                            if spec.branches
                            else "no branches and no holdout: the split does nothing",
                        )
                    )
                for b, branch in enumerate(spec.branches):
                    walk(branch.steps, f"{here}.split.branches[{b}].steps", event_types)

    walk(journey.steps, "steps", entry_types)
    if journey.entry.reentry == "restart" and _PRODUCT_READS.search(
        journey.model_dump_json(exclude={"title", "description"})  # its expressions and templates, not prose
    ):
        found.append(
            Finding(
                "entry.reentry",
                "restart with the catalogue's facts (replenish_at, order.replenish_item, items[].product "
                "or .replenish, order.categories): a restarted instance keeps the products of the order it "
                "first started with, so a new order's items would be timed and named wrongly; use "
                "`reentry: after_exit` (each order starts anew, with its own products)",
            )
        )
    return found


#: What reads the catalogue's facts in an order context (core/products.py enrich): an instance
#: restarted by a signal keeps the facts of its first input (workflows/journey.py continue_as_new).
_PRODUCT_READS = re.compile(r"\breplenish_at\s*\(|\.product\b|\.replenish(?:_item)?\b|\border\.categories\b")
