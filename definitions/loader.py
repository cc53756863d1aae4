"""Load and check the journey definitions of a directory.

Every problem is reported as one line naming the file, the line YAML gives for it, and the field
path, e.g. `definitions/x.yaml:12: steps[2].send.channel: 'fax' is not one of sms, email, ...`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ValidationError

from core.audience import SEGMENTS_DIR, RfmTest, Segment, tests_of
from core.contact_policy import EXEMPT, ContactPolicy, PolicyOverride
from core.loyalty import ENGINE_EVENT_TYPES, NO_LOYALTY, Loyalty
from core.replies import DEFAULT_REPLIES, ReplyRules
from core.rfm import DEFAULT_TABLE, RfmTable
from core.sms_registry import NO_REGISTRY, SmsRegistry
from definitions.broadcasts import BROADCAST_EVENT, BROADCASTS_DIR, Broadcast, BroadcastSchedule, journey_of
from definitions.events import BUILT_IN, ENGINE_DECLARATIONS, EVENTS_FILE, EventCatalog, EventDeclaration
from definitions.expressions import check_template
from definitions.lint import aliyun_problems, dotted, lint_journey, registry_problems, template_problems
from definitions.render import has_variant
from definitions.schema import (
    Journey,
    JourneySnapshot,
    Resource,
    SendStep,
    Template,
    WaitForStep,
    walk_steps,
)

PACKAGE_DIR = Path(__file__).resolve().parent
#: Files of a definitions directory that are not journeys.
RFM_FILE = "rfm.yaml"
RESOURCES_FILE = "resources.yaml"
POLICY_FILE = "policy.yaml"
LOYALTY_FILE = "loyalty.yaml"
SMS_FILE = "sms.yaml"
REPLIES_FILE = "replies.yaml"
_M = TypeVar("_M", bound=BaseModel)
RESERVED_FILES = frozenset({RFM_FILE, EVENTS_FILE, RESOURCES_FILE, POLICY_FILE, LOYALTY_FILE, SMS_FILE, REPLIES_FILE})


class DefinitionsError(Exception):
    """The definitions of a directory have problems; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Definitions:
    """The journeys of one directory, frozen into snapshots, and the event types they react to."""

    journeys: dict[str, JourneySnapshot] = field(default_factory=dict)
    #: RFM thresholds, weights and tiers (`rfm.yaml`; the practice's table without one).
    rfm: RfmTable = field(default_factory=RfmTable)
    #: The event types journeys and the API know: built-ins and `events.yaml`'s declarations.
    events: EventCatalog = field(default_factory=EventCatalog)
    #: Named groups of customers (`segments/*.yaml`), by name.
    segments: dict[str, Segment] = field(default_factory=dict)
    #: Broadcasts (`broadcasts/*.yaml`) by name, each with the journey snapshot its members run.
    broadcasts: dict[str, tuple[Broadcast, JourneySnapshot]] = field(default_factory=dict)
    #: What send steps hand out, with its harassment limits (`resources.yaml`), by name.
    resources: dict[str, Resource] = field(default_factory=dict)
    #: The shop's contact policy (`policy.yaml`; what the engine always did without one).
    policy: ContactPolicy = field(default_factory=ContactPolicy)
    #: The loyalty programme: points, tiers, blacklists (`loyalty.yaml`; none without one).
    loyalty: Loyalty = NO_LOYALTY
    #: The signatures and templates registered with Aliyun SMS (`sms.yaml`; none without one).
    sms: SmsRegistry = NO_REGISTRY
    #: What SMS replies get (`replies.yaml`; the built-in unsubscribe words without one).
    replies: ReplyRules = DEFAULT_REPLIES
    #: Every template that loaded, by name (`templates/*.yaml`): what the reply rules send.
    templates: dict[str, Template] = field(default_factory=dict)
    #: What looks wrong but may be meant (a field a declared event's schema lacks), one line each as
    #: `path:line: field: warning: ...`; never a reason not to load (`journeys validate` prints them).
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.journeys.values())

    def __getitem__(self, name: str) -> JourneySnapshot:
        return self.journeys[name]

    def __len__(self) -> int:
        return len(self.journeys)

    @property
    def routed_events(self) -> frozenset[str]:
        """The event types some journey starts on, waits for or exits on: what the router has
        something to do with (triggers/router.py `plan`)."""
        return frozenset(
            event_type
            for snapshot in self
            for event_type in (*snapshot.definition.entry.events, *snapshot.definition.listened_events)
        )

    @property
    def urgent_events(self) -> frozenset[str]:
        """The event types that start a journey sending at once (`Journey.sends_at_once`): a
        customer waits for what they start, so they are dispatched first."""
        return frozenset(
            event_type
            for snapshot in self
            if snapshot.definition.sends_at_once
            for event_type in snapshot.definition.entry.events
        )


# ---------------------------------------------------------------------------------------------
# YAML with line numbers


def _line_map(node: yaml.Node, path: tuple = (), lines: dict | None = None) -> dict[tuple, int]:
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _line_map(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), lines)
    return lines


class _AliasRefused(yaml.YAMLError):
    """A definition used a YAML alias: refused, so a 'billion laughs' file cannot blow up."""

    def __init__(self, mark: yaml.Mark):
        self.problem_mark = mark
        self.problem = "YAML anchors and aliases (&name, *name) are not allowed in definitions; write the value out"


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    text = path.read_text(encoding="utf-8")
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # a linear scan, before anything is built
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(event.start_mark)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text)
    return data, (_line_map(node) if node is not None else {(): 1})


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 1


def _parse_loc(where: str) -> tuple:
    """`steps[2].send.channel` → `('steps', 2, 'send', 'channel')` (the inverse of lint's dotted)."""
    loc: list[Any] = []
    for part in where.replace("]", "").replace("[", ".").split("."):
        if part:
            loc.append(int(part) if part.isdigit() else part)
    return tuple(loc)


_UNION_MEMBER = re.compile(r"^((literal|list|dict|str|int|float|bool|function-[a-z]+)\[|constrained-str$)")


def _problem_lines(path: Path, lines: dict[tuple, int], err: ValidationError, prefix: tuple = ()) -> list[str]:
    """Each problem pydantic found in a file, as `path:line: field: message` (`prefix` places
    the validated value inside the file, e.g. `('events', 2)`)."""
    return [
        f"{path}:{_line_of(lines, (*prefix, *loc))}: {dotted((*prefix, *loc))}: {message}"
        for loc, message in _pydantic_problems(err)
    ]


def _pydantic_problems(err: ValidationError) -> list[tuple[tuple, str]]:
    out: list[tuple[tuple, str]] = []
    seen: set[tuple] = set()
    for item in err.errors():
        loc: list[Any] = []
        for part in item["loc"]:
            if loc and part == loc[-1] and isinstance(part, str):
                continue  # a step's tag repeats its key: ('send', 'send') → ('send',)
            if isinstance(part, str) and _UNION_MEMBER.match(part):
                continue  # which member of a union (one event type or a list of them) failed
            if part == "[key]":
                continue  # a mapping's key was refused: the key itself names the place
            loc.append(part)
        if tuple(loc) in seen:
            continue  # a union reports each member's failure: the first says it best
        seen.add(tuple(loc))
        kind, given = item["type"], item.get("input")
        if kind == "literal_error":
            expected = item["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            message = f"{given!r} is not one of {expected}"
        elif kind == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}"
        elif kind == "missing":
            message = f"{loc[-1]!r} is required"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] in ("wait", "timeout", "offset"):
            message = f"{given!r} is not a duration like 15m, 2h, 3d or -2h"
        else:
            message = item["msg"]
            if given is not None and not isinstance(given, dict | list):
                message = f"{given!r}: {message}"
        out.append((tuple(loc), message))
    return out


# ---------------------------------------------------------------------------------------------
# Templates


def load_templates(
    directory: Path, lines_of: dict[str, tuple[Path, dict[tuple, int]]] | None = None
) -> tuple[dict[str, Template], list[str]]:
    """The templates of `directory` (`templates/*.yaml`) and their problems; `lines_of`, given,
    gets each template's file and line numbers (for the checks against sms.yaml)."""
    templates: dict[str, Template] = {}
    problems: list[str] = []
    folder = directory / "templates"
    for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        try:
            data, lines = _read_yaml(path)
            template = Template.model_validate(data or {})
        except yaml.YAMLError as err:
            problems.append(f"{path}:{_yaml_line(err)}: {_yaml_message(err)}")
            continue
        except ValidationError as err:
            problems.extend(_problem_lines(path, lines, err))
            continue
        for channel, variants in (("sms", template.sms), ("email", template.email), ("webhook", template.webhook)):
            for locale, text in variants.items():
                parts = (
                    [("subject", text.subject, False), ("body", text.body, True)]
                    if channel == "email"
                    else [("", text, False)]
                )
                for part, source, html in parts:
                    problem = check_template(source, html=html)
                    loc = (channel, locale, part) if part else (channel, locale)
                    for message in [problem] if problem else template_problems(source):
                        problems.append(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}")
        for name, source in (template.aliyun_sms.params if template.aliyun_sms else {}).items():
            problem = check_template(source)
            loc = ("aliyun_sms", "params", name)
            for message in [problem] if problem else template_problems(source):
                problems.append(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}")
        templates[path.stem] = template
        if lines_of is not None:
            lines_of[path.stem] = (path, lines)
    return templates, problems


def _aliyun_template_problems(
    templates: dict[str, Template], lines_of: dict[str, tuple[Path, dict[tuple, int]]], registry: SmsRegistry
) -> list[str]:
    """Each template's `aliyun_sms` section checked against sms.yaml (definitions/lint.py
    aliyun_problems), at its file and line."""
    problems: list[str] = []
    for name, template in templates.items():
        if template.aliyun_sms is None or name not in lines_of:
            continue
        path, lines = lines_of[name]
        for loc, message in aliyun_problems(template.aliyun_sms, registry):
            problems.append(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}")
    return problems


def _yaml_line(err: yaml.YAMLError) -> int:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    return mark.line + 1 if mark else 1


def _yaml_message(err: yaml.YAMLError) -> str:
    return f"not valid YAML: {getattr(err, 'problem', None) or err}"


# ---------------------------------------------------------------------------------------------
# Journeys


def _journey_problems(
    journey: Journey,
    templates: dict[str, Template],
    catalog: EventCatalog = BUILT_IN,
    resources: dict[str, Resource] | None = None,
    warnings: list[tuple[str, str]] | None = None,
    policy: ContactPolicy | None = None,
    sms: SmsRegistry | None = None,
) -> list[tuple[str, str]]:
    """Problems pydantic cannot see: references, known event types, routing, duplicate step ids,
    a marketing send of a template Aliyun registered as another kind (with `sms`, sms.yaml), and
    the mistakes of definitions/lint.py, the journey's expressions among them (its warnings go to
    `warnings`)."""
    problems: list[tuple[str, str]] = []
    order_keyed = journey.entry.key == "order"

    def routable(event_type: str, where: str) -> None:
        if not catalog.known(event_type):
            problems.append(
                (where, f"{event_type!r} is not a known event type (declare it in {EVENTS_FILE}); "
                        f"known: {', '.join(catalog.names())}")
            )  # fmt: skip
        elif order_keyed and not catalog.keyed_by_order(event_type):
            problems.append((where, f"{event_type} carries no order_id, so it cannot reach a journey keyed by order"))

    for i, event_type in enumerate(journey.entry.events):
        routable(event_type, "entry.event" if isinstance(journey.entry.event, str) else f"entry.event[{i}]")
    for i, event_type in enumerate(journey.exit_on):
        routable(event_type, f"exit_on[{i}]")
    if journey.conversion:
        routable(journey.conversion.event, "goal" if isinstance(journey.goal, str) else "goal.event")

    def capped(override: PolicyOverride | None, where: str) -> None:
        shop = policy or ContactPolicy()
        if override is not None and override.cap not in (None, EXEMPT) and shop.cap_named(override.cap) is None:
            known = ", ".join(cap.name for cap in shop.caps) or "none"
            problems.append(
                (f"{where}.cap", f"no cap {override.cap!r} in {POLICY_FILE}; caps: {known} (or `exempt` with a reason)")
            )

    capped(journey.policy, "policy")
    seen_ids: dict[str, str] = {}
    for path, step in walk_steps(journey.steps):
        if isinstance(step, SendStep):
            spec = step.send
            capped(spec.policy, f"{path}.send.policy")
            template = templates.get(spec.template)
            if template is None:
                problems.append((f"{path}.send.template", f"unknown template {spec.template!r}"))
            else:
                for role, channel in (("channel", spec.channel), ("fallback", spec.fallback)):
                    if channel and not has_variant(template, channel):
                        problems.append((f"{path}.send.{role}", f"template {spec.template!r} has no {channel} text"))
                registered = (
                    sms.templates.get(template.aliyun_sms.template_code) if sms and template.aliyun_sms else None
                )
                marketing = (spec.category or journey.category) == "marketing"
                if (
                    registered is not None
                    and marketing
                    and registered.kind != "marketing"
                    and "sms"
                    in (
                        spec.channel,
                        spec.fallback,
                    )
                ):
                    problems.append(
                        (f"{path}.send.template", f"a marketing send through Aliyun needs a marketing template: "
                         f"template {spec.template!r} goes out as {template.aliyun_sms.template_code}, registered "
                         f"as {registered.kind} (register a marketing one, with the opt-out text, or send it "
                         "as transactional)")
                    )  # fmt: skip
            if spec.step_id in seen_ids:
                problems.append(
                    (
                        f"{path}.send",
                        f"step id {spec.step_id!r} is already used at {seen_ids[spec.step_id]}; "
                        "give this send its own id",
                    )
                )
            seen_ids.setdefault(spec.step_id, path)
            if spec.resource and spec.resource not in (resources or {}):
                known = ", ".join(sorted(resources or {})) or "none"
                problems.append(
                    (f"{path}.send.resource", f"unknown resource {spec.resource!r} (declare it in {RESOURCES_FILE}); "
                                              f"declared: {known}")
                )  # fmt: skip
        elif isinstance(step, WaitForStep):
            routable(step.wait_for.event, f"{path}.wait_for.event")
    for finding in lint_journey(journey, catalog):
        if not finding.warning:
            problems.append((finding.where, finding.message))
        elif warnings is not None:
            warnings.append((finding.where, f"warning: {finding.message}"))
    return problems


def snapshot_of(
    journey: Journey, templates: dict[str, Template], resources: dict[str, Resource] | None = None
) -> JourneySnapshot:
    """The journey frozen with the templates and resources its send steps name, and the hash of
    them all as its version."""
    sends = [step.send for _, step in walk_steps(journey.steps) if isinstance(step, SendStep)]
    chosen = {name: templates[name] for name in sorted({spec.template for spec in sends})}
    handed_out = {name: (resources or {})[name] for name in sorted({spec.resource for spec in sends if spec.resource})}
    content: dict[str, Any] = {
        "definition": journey.model_dump(mode="json", by_alias=True),
        "templates": {k: v.model_dump(mode="json") for k, v in chosen.items()},
    }
    if handed_out:  # journeys without resources keep the versions they had before resources existed
        content["resources"] = {k: v.model_dump(mode="json") for k, v in handed_out.items()}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False)
    version = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return JourneySnapshot(definition=journey, templates=chosen, resources=handed_out, version=version)


def check_definitions(directory: Path | str) -> tuple[Definitions, list[str]]:
    """Load every journey of `directory`; return what loaded and one line per problem."""
    directory = Path(directory)
    if not directory.is_dir():
        return Definitions(), [f"{directory}: no such directory"]
    template_lines: dict[str, tuple[Path, dict[tuple, int]]] = {}
    templates, problems = load_templates(directory, template_lines)
    loaded = Definitions(templates=templates)
    loaded.rfm = _load_rfm(directory, problems)
    loaded.events = _load_events(directory, problems)
    loaded.segments = _load_segments(directory, loaded.rfm, problems)
    loaded.resources = _load_resources(directory, loaded.events, problems)
    loaded.policy = _load_policy(directory, problems)
    loaded.loyalty = _load_loyalty(directory, loaded.events, loaded.segments, problems)
    loaded.sms = _load_sms(directory, problems)
    registry = loaded.sms if (directory / SMS_FILE).is_file() else None  # no sms.yaml: no Aliyun to check for
    if registry is not None:
        problems += _aliyun_template_problems(templates, template_lines, registry)
    loaded.replies = _load_replies(directory, templates, problems)
    where_defined: dict[str, str] = {}
    files = [
        path
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
        if path.name not in RESERVED_FILES
    ]
    if not files:
        problems.append(f"{directory}: no journey definitions (*.yaml)")
    for path in files:
        try:
            data, lines = _read_yaml(path)
        except yaml.YAMLError as err:
            problems.append(f"{path}:{_yaml_line(err)}: {_yaml_message(err)}")
            continue
        if not isinstance(data, dict):
            problems.append(f"{path}:1: a journey definition is a mapping with name, category, entry and steps")
            continue
        try:
            journey = Journey.model_validate(data)
        except ValidationError as err:
            problems.extend(_problem_lines(path, lines, err))
            continue
        warned: list[tuple[str, str]] = []
        found = _journey_problems(journey, templates, loaded.events, loaded.resources, warned, loaded.policy, registry)
        own, warnings = (
            [f"{path}:{_line_of(lines, _parse_loc(where))}: {where}: {message}" for where, message in listed]
            for listed in (found, warned)
        )
        loaded.warnings += warnings
        if journey.name in where_defined:
            own.append(
                f"{path}:{_line_of(lines, ('name',))}: name: journey {journey.name!r} is already defined "
                f"in {where_defined[journey.name]}"
            )
        problems.extend(own)
        where_defined.setdefault(journey.name, str(path))
        if not own:
            loaded.journeys[journey.name] = snapshot_of(journey, templates, loaded.resources)
    loaded.broadcasts = _load_broadcasts(directory, loaded, templates, problems)
    return loaded, problems


def _load_broadcasts(
    directory: Path, loaded: Definitions, templates: dict[str, Template], problems: list[str]
) -> dict[str, tuple[Broadcast, JourneySnapshot]]:
    """`broadcasts/*.yaml`: each names a segment and a send step, checked as a journey's are."""
    found: dict[str, tuple[Broadcast, JourneySnapshot]] = {}
    # The instances' own entry event, known to broadcasts alone.
    catalog = loaded.events.including(EventDeclaration(name=BROADCAST_EVENT, key="customer"))
    for path in sorted((directory / BROADCASTS_DIR).glob("*.yaml")):
        read = _read_optional(path, problems)
        if read is None:
            continue
        data, lines = read
        try:
            broadcast = Broadcast.model_validate(data or {})
        except ValidationError as err:
            problems.extend(_problem_lines(path, lines, err))
            continue
        own = []
        if broadcast.name != path.stem:
            own.append((("name",), f"{broadcast.name!r} must be the file's name, {path.stem!r}"))
        if broadcast.name in loaded.journeys:
            own.append((("name",), f"{broadcast.name!r} is already a journey's name"))
        if broadcast.segment not in loaded.segments:
            known = ", ".join(sorted(loaded.segments)) or "none"
            own.append((("segment",), f"no segment {broadcast.segment!r}; segments: {known}"))
        journey = journey_of(broadcast)
        warned: list[tuple[str, str]] = []
        registry = loaded.sms if (directory / SMS_FILE).is_file() else None
        for where, message in _journey_problems(
            journey, templates, catalog, loaded.resources, warned, loaded.policy, registry
        ):
            own.append((_broadcast_loc(where), message))
        own_warnings = [(_broadcast_loc(where), message) for where, message in warned]
        for into, listed in ((problems, own), (loaded.warnings, own_warnings)):
            into += [f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}" for loc, message in listed]
        if not own:
            found[broadcast.name] = (broadcast, snapshot_of(journey, templates, loaded.resources))
    return found


def _broadcast_loc(where: str) -> tuple:
    """Where a problem of a broadcast's journey (journey_of) is in the broadcast's file: the
    send step's, as the file wrote it."""
    if where.startswith("steps"):
        where = "send" + where.split(".send", 1)[1] if ".send" in where else "send"
    return _parse_loc(where)


def _read_optional(path: Path, problems: list[str]) -> tuple[Any, dict[tuple, int]] | None:
    """An optional file of the directory (`events.yaml`, `rfm.yaml`): None when it is absent or
    not YAML (the problem added)."""
    if not path.is_file():
        return None
    try:
        return _read_yaml(path)
    except yaml.YAMLError as err:
        problems.append(f"{path}:{_yaml_line(err)}: {_yaml_message(err)}")
        return None


def _declarations(path: Path, field_name: str, model: type[Any], problems: list[str]) -> list[tuple[int, Any]] | None:
    """A file holding `FIELD:`, a list of declarations with unique names (`events.yaml`,
    `resources.yaml`): the good ones with their line, checked one by one so a bad one does not
    hide the rest; None when the file is absent or not the right shape (the problem added)."""
    read = _read_optional(path, problems)
    if read is None:
        return None
    data, lines = read
    if not isinstance(data, dict | None) or not isinstance((data or {}).get(field_name, []), list):
        problems.append(f"{path}:1: {path.name} holds `{field_name}:`, a list of declarations, each with a name")
        return None
    unknown = sorted(set(data or {}) - {field_name})
    if unknown:
        problems.append(f"{path}:{_line_of(lines, (unknown[0],))}: {unknown[0]}: unknown field {unknown[0]!r}")
    declared: list[tuple[int, Any]] = []
    for i, item in enumerate((data or {}).get(field_name, [])):
        try:
            declaration = model.model_validate(item)
        except ValidationError as err:
            problems.extend(_problem_lines(path, lines, err, prefix=(field_name, i)))
            continue
        loc = (field_name, i, "name")
        if declaration.name in {d.name for _, d in declared}:
            problems.append(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {declaration.name!r} is declared twice")
            continue
        declared.append((_line_of(lines, loc), declaration))
    return declared


def _load_events(directory: Path, problems: list[str]) -> EventCatalog:
    """`events.yaml`: the shop's own event types (only the built-in ones without the file)."""
    declared = _declarations(directory / EVENTS_FILE, "events", EventDeclaration, problems)
    if declared is None:
        return BUILT_IN
    return EventCatalog.of([*ENGINE_DECLARATIONS, *(declaration for _, declaration in declared)])


def _load_resources(directory: Path, catalog: EventCatalog, problems: list[str]) -> dict[str, Resource]:
    """`resources.yaml`: what send steps hand out and its limits; each `redeemed_by` must be a
    known event type."""
    path = directory / RESOURCES_FILE
    found: dict[str, Resource] = {}
    for line, resource in _declarations(path, "resources", Resource, problems) or []:
        if resource.redeemed_by and not catalog.known(resource.redeemed_by):
            problems.append(
                f"{path}:{line}: resources.{resource.name}.redeemed_by: {resource.redeemed_by!r} is not a known "
                f"event type (declare it in {EVENTS_FILE})"
            )
            continue
        found[resource.name] = resource
    return found


def _load_segments(directory: Path, rfm: RfmTable, problems: list[str]) -> dict[str, Segment]:
    """`segments/*.yaml`, one segment a file, its name its file's."""
    found: dict[str, Segment] = {}
    tiers = [tier.name for tier in rfm.tiers]
    for path in sorted((directory / SEGMENTS_DIR).glob("*.yaml")):
        read = _read_optional(path, problems)
        if read is None:
            continue
        data, lines = read
        try:
            segment = Segment.model_validate(data or {})
        except ValidationError as err:
            problems.extend(_problem_lines(path, lines, err))
            continue
        if segment.name != path.stem:
            problems.append(
                f"{path}:{_line_of(lines, ('name',))}: name: {segment.name!r} must be the file's name, {path.stem!r}"
            )
            continue
        unknown = [
            str(value)
            for test in tests_of(segment.where)
            if isinstance(test, RfmTest) and test.rfm == "tier"
            for value in ([test.is_] if test.is_ is not None else test.in_ or [])
            if value not in tiers
        ]
        if unknown:
            problems.append(
                f"{path}:{_line_of(lines, ('where',))}: where: unknown RFM tier {unknown[0]!r}; "
                f"tiers: {', '.join(tiers)}"
            )
            continue
        found[segment.name] = segment
    return found


def _load_policy(directory: Path, problems: list[str]) -> ContactPolicy:
    """`policy.yaml`: the shop's contact policy; what the engine always did without the file (or
    with a broken one, the problems added)."""
    path = directory / POLICY_FILE
    read = _read_optional(path, problems)
    if read is None:
        return ContactPolicy()
    data, lines = read
    try:
        policy = ContactPolicy.model_validate(data or {})
    except ValidationError as err:
        problems.extend(_problem_lines(path, lines, err))
        return ContactPolicy()
    found = policy.problems()
    problems.extend(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}" for loc, message in found)
    return ContactPolicy() if found else policy


def load_policy(directory: Path | str) -> ContactPolicy:
    """The contact policy of `directory` (`policy.yaml`), or DefinitionsError naming its problems:
    what the worker decides every send by."""
    problems: list[str] = []
    policy = _load_policy(Path(directory), problems)
    if problems:
        raise DefinitionsError(problems)
    return policy


def _load_loyalty(directory: Path, events: EventCatalog, segments: dict[str, Segment], problems: list[str]) -> Loyalty:
    """`loyalty.yaml`: the loyalty programme; none without the file (or with a broken one, the
    problems added, each at its line)."""
    path = directory / LOYALTY_FILE
    read = _read_optional(path, problems)
    if read is None:
        return NO_LOYALTY
    data, lines = read
    try:
        loyalty = Loyalty.model_validate(data or {})
    except ValidationError as err:
        problems.extend(_problem_lines(path, lines, err))
        return NO_LOYALTY
    found: list[tuple[tuple, str]] = []
    try:
        ZoneInfo(loyalty.zone)
    except (ZoneInfoNotFoundError, ValueError):
        found.append((("zone",), f"unknown time zone {loyalty.zone!r} (an IANA name: Asia/Shanghai)"))
    known_segments = ", ".join(sorted(segments)) or "none"
    if loyalty.points is not None:
        for i, bonus in enumerate(loyalty.points.bonuses):
            if not events.known(bonus.event):
                found.append(
                    (("points", "bonuses", i, "event"), f"{bonus.event!r} is not a known event type; known: "
                     f"{', '.join(events.names())}")
                )  # fmt: skip
            elif bonus.event in ENGINE_EVENT_TYPES:
                found.append(
                    (("points", "bonuses", i, "event"), f"{bonus.event!r} is the engine's own; it earns nothing")
                )
            if bonus.once_per == "order" and bonus.event in events.names() and not events.keyed_by_order(bonus.event):
                found.append((("points", "bonuses", i, "once_per"), f"{bonus.event} events name no order"))
        for i, multiplier in enumerate(loyalty.points.multipliers):
            if multiplier.segment is not None and multiplier.segment not in segments:
                found.append(
                    (
                        ("points", "multipliers", i, "segment"),
                        f"no segment {multiplier.segment!r}; segments: {known_segments}",
                    )
                )
    for kind in ("points", "members"):
        for i, name in enumerate(getattr(loyalty.blacklists, kind).segments):
            if name not in segments:
                found.append((("blacklists", kind, "segments", i), f"no segment {name!r}; segments: {known_segments}"))
    problems.extend(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}" for loc, message in found)
    return NO_LOYALTY if found else loyalty


def load_loyalty(directory: Path | str) -> Loyalty:
    """The loyalty programme of `directory` (`loyalty.yaml`), or DefinitionsError naming its problems."""
    directory = Path(directory)
    problems: list[str] = []
    events = _load_events(directory, problems)
    segments = _load_segments(directory, _load_rfm(directory, problems), problems)
    loyalty = _load_loyalty(directory, events, segments, problems)
    if problems:
        raise DefinitionsError(problems)
    return loyalty


def _load_model(path: Path, model: type[_M], default: _M, problems: list[str]) -> tuple[_M, dict]:
    """An optional file of the directory read as `model`: `default` without the file, or with a
    broken one (its problems added, each at its line); with the file's line numbers."""
    read = _read_optional(path, problems)
    if read is None:
        return default, {}
    data, lines = read
    try:
        return model.model_validate(data or {}), lines
    except ValidationError as err:
        problems.extend(_problem_lines(path, lines, err))
        return default, {}


def _load_sms(directory: Path, problems: list[str]) -> SmsRegistry:
    """`sms.yaml`: the signatures and templates the shop registered with Aliyun SMS, checked as
    Aliyun takes them (definitions/lint.py registry_problems)."""
    path = directory / SMS_FILE
    registry, lines = _load_model(path, SmsRegistry, NO_REGISTRY, problems)
    problems.extend(
        f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {message}" for loc, message in registry_problems(registry)
    )
    return registry


def load_sms_registry(directory: Path | str) -> SmsRegistry:
    """The registered SMS signatures and templates of `directory` (`sms.yaml`), or DefinitionsError."""
    problems: list[str] = []
    registry = _load_sms(Path(directory), problems)
    if problems:
        raise DefinitionsError(problems)
    return registry


def _load_replies(directory: Path, templates: dict[str, Template], problems: list[str]) -> ReplyRules:
    """`replies.yaml`: what SMS replies get; each template it names must exist and have SMS text."""
    path = directory / REPLIES_FILE
    replies, lines = _load_model(path, ReplyRules, DEFAULT_REPLIES, problems)
    found = [
        ((("rules", i, field_name),), name)
        for i, rule in enumerate(replies.rules)
        for field_name, name in (("template", rule.template), ("confirm", rule.confirm))
        if name is not None and not has_variant(templates.get(name) or Template(), "sms")
    ]
    for (loc,), name in found:
        known = ", ".join(sorted(templates)) or "none"
        reason = "has no sms text" if name in templates else f"is not a template; templates: {known}"
        problems.append(f"{path}:{_line_of(lines, loc)}: {dotted(loc)}: {name!r} {reason}")
    return DEFAULT_REPLIES if found else replies


def load_replies(directory: Path | str, templates: dict[str, Template] | None = None) -> ReplyRules:
    """What SMS replies get in `directory` (`replies.yaml`, its templates among `templates`, by
    default the directory's), or DefinitionsError naming replies.yaml's own problems: a broken
    template it does not name is `journeys validate`'s to report, no reason to drop the rules."""
    directory = Path(directory)
    if templates is None:
        templates, _ = load_templates(directory)
    problems: list[str] = []
    replies = _load_replies(directory, templates, problems)
    if problems:
        raise DefinitionsError(problems)
    return replies


def _load_rfm(directory: Path, problems: list[str]) -> RfmTable:
    """`rfm.yaml`: the shop's RFM table, or the practice's default without the file."""
    path = directory / RFM_FILE
    read = _read_optional(path, problems)
    if read is None:
        return DEFAULT_TABLE
    data, lines = read
    try:
        return RfmTable.model_validate(data or {})
    except ValidationError as err:
        problems.extend(_problem_lines(path, lines, err))
        return DEFAULT_TABLE


def rescheduled(definitions: Definitions, name: str, when: datetime) -> Definitions:
    """`definitions` with broadcast `name` moved to `when`: a naive time is each customer's own
    local time, an aware one a single moment (`journeys simulate --broadcast NAME=TIME` plays a
    holiday campaign on last month's data this way). KeyError names the broadcasts there are."""
    if name not in definitions.broadcasts:
        raise KeyError(f"no broadcast {name!r}; broadcasts: {', '.join(sorted(definitions.broadcasts)) or 'none'}")
    broadcast, snapshot = definitions.broadcasts[name]
    schedule = BroadcastSchedule(local_time=when) if when.tzinfo is None else BroadcastSchedule(at=when)
    moved = broadcast.model_copy(update={"schedule": schedule})
    again = snapshot_of(journey_of(moved), snapshot.templates, snapshot.resources)
    return replace(definitions, broadcasts={**definitions.broadcasts, name: (moved, again)})


def load_definitions(directory: Path | str) -> Definitions:
    """The journeys of `directory`, or DefinitionsError listing every problem."""
    loaded, problems = check_definitions(directory)
    if problems:
        raise DefinitionsError(problems)
    return loaded


def default_directory() -> Path:
    """`./definitions` when run from a checkout, else the definitions shipped with the package."""
    local = Path.cwd() / "definitions"
    return local if local.is_dir() and any(local.glob("*.yaml")) else PACKAGE_DIR


def _schema_of(model: type[BaseModel], title: str) -> dict[str, Any]:
    """The JSON Schema of one definitions file's model, for editors (`journeys schema ...`)."""
    schema = model.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = title
    return schema


def json_schema() -> dict[str, Any]:
    return _schema_of(Journey, "Journeys journey definition")


def loyalty_json_schema() -> dict[str, Any]:
    """The JSON Schema of `loyalty.yaml` (definitions/loyalty.schema.json, for editors)."""
    return _schema_of(Loyalty, "Journeys loyalty programme (loyalty.yaml)")


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of `policy.yaml` (definitions/policy.schema.json, for editors)."""
    return _schema_of(ContactPolicy, "Journeys contact policy (policy.yaml)")


def sms_json_schema() -> dict[str, Any]:
    """The JSON Schema of `sms.yaml` (definitions/sms.schema.json, for editors)."""
    return _schema_of(SmsRegistry, "Journeys SMS registry: Aliyun signatures and templates (sms.yaml)")


def template_json_schema() -> dict[str, Any]:
    """The JSON Schema of a message template (`templates/*.yaml`; definitions/template.schema.json)."""
    return _schema_of(Template, "Journeys message template (templates/*.yaml)")
