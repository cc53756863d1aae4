"""Segments: named groups of customers, one file each in `definitions/segments/` (read by
definitions.loader), evaluated in the store (store.segments compiles them to SQL, on PostgreSQL
and SQLite alike).

    name: gold_lapsing
    title: 金卡会员, 90 天未购买
    where:
      all:
        - {trait: member_level, is: gold}
        - {rfm: tier, in: [champion, loyal, potential]}
        - {no_purchase_for_days: 90}
        - {subscribed: sms}

A condition is `all: [...]`, `any: [...]`, `not: {...}` or one test:

| test | holds when |
|---|---|
| `{trait: NAME, is: V}`, `in: [..]`, `at_least: N`, `at_most: N`, `exists: true/false` | the trait compares so |
| `{tag: TAG}` | the customer has the tag |
| `{rfm: r/f/m/score/tier, is/in/at_least/at_most: ...}` | RFM now (core.rfm) compares so |
| `{orders_in_last_days: N, at_least: K}` (or `at_most`) | orders created in the last N days |
| `{last_purchase_within_days: N}` | a purchase (paid, not refunded) in the last N days |
| `{no_purchase_for_days: N}` | none in the last N days (or never) |
| `{lifecycle: [churned, sleeping]}`, `{lifecycle: silent}` | the lifecycle stage now (core.lifecycle) is one of them |
| `{spent_in_year: {at_least: X}}` (or `at_most`) | the year's purchases add up so (RFM's M amount) |
| `{subscribed: sms/email}` | has that contact, has not unsubscribed from it, is not blacklisted |
| `{locale: zh-CN}`, `{timezone: Asia/Shanghai}` | the record says so |
| `{bought: {category: skincare, within: 180d}}`, `{bought: {sku: S}}` | a purchase in the window has the item |
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from core.durations import parse_duration
from core.lifecycle import STAGES
from core.records import TRAIT_KEY

SEGMENTS_DIR = "segments"
#: The longest `bought: {within: ...}`.
MAX_BOUGHT_WITHIN = timedelta(days=3650)

Scalar = str | int | float | bool


class _Compare(BaseModel):
    """One comparison: exactly one of is, in, at_least, at_most (or exists, for traits)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    is_: Scalar | None = Field(default=None, alias="is")
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    at_least: float | None = None
    at_most: float | None = None

    def _given(self) -> list[str]:
        return [name for name in ("is_", "in_", "at_least", "at_most") if getattr(self, name) is not None]

    @model_validator(mode="after")
    def _one_comparison(self):
        given = self._given()
        if not given and getattr(self, "exists", None) is None and getattr(self, "within_next_days", None) is None:
            raise ValueError("give one of is, in, at_least, at_most")
        return self


class TraitTest(_Compare):
    trait: str = Field(pattern=TRAIT_KEY.pattern)
    exists: bool | None = None
    within_next_days: int | None = Field(
        default=None,
        ge=0,
        le=3650,
        description="The trait is a date (2026-12-10, or an ISO time) from the segment's day to this many days "
        "after it: `{trait: card_expires_on, within_next_days: 7}`.",
    )

    @model_validator(mode="after")
    def _dates_alone(self):
        if self.within_next_days is not None and (self._given() or self.exists is not None):
            raise ValueError(
                "within_next_days is a comparison of its own: not with is, in, at_least, at_most or exists"
            )
        return self


class TagTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = Field(min_length=1, max_length=100)


class RfmTest(_Compare):
    rfm: Literal["r", "f", "m", "score", "tier"]

    @model_validator(mode="after")
    def _tier_by_name(self):
        if self.rfm == "tier" and (self.at_least is not None or self.at_most is not None):
            raise ValueError("a tier is a name: compare it with is or in")
        return self


class OrdersTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders_in_last_days: int = Field(ge=1, le=3650)
    at_least: int | None = Field(default=None, ge=0)
    at_most: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bound(self):
        if self.at_least is None and self.at_most is None:
            raise ValueError("give at_least or at_most")
        return self


class LastPurchaseTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    last_purchase_within_days: int = Field(ge=1, le=365)


class NoPurchaseTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    no_purchase_for_days: int = Field(ge=1, le=365)


class LifecycleTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lifecycle: list[str] = Field(min_length=1, description="A stage, or a list of them (any of).")

    @field_validator("lifecycle", mode="before")
    @classmethod
    def _stages(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            unknown = [v for v in value if v not in STAGES]
            if unknown:
                raise ValueError(f"unknown lifecycle stage {unknown[0]!r}; stages: {', '.join(STAGES)}")
        return value

    @property
    def stages(self) -> list[str]:
        return self.lifecycle


class SpentBound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at_least: float | None = None
    at_most: float | None = None


class SpentTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spent_in_year: SpentBound


class SubscribedTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subscribed: Literal["sms", "email"]


class LocaleTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    locale: Literal["zh-CN", "en"]


class TimezoneTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(min_length=1, max_length=64)


class BoughtSpec(BaseModel):
    """A purchase (paid, not refunded) within `within` (or ever) with an item of `sku`, or of a
    SKU the catalogue (core/products.py) files under `category`."""

    model_config = ConfigDict(extra="forbid")

    category: str | None = Field(default=None, min_length=1, max_length=100)
    sku: str | None = Field(default=None, min_length=1, max_length=100)
    within: str | None = Field(default=None, description="A duration (180d, 26w); none: ever.", examples=["180d"])

    @model_validator(mode="after")
    def _one_product(self):
        if (self.category is None) == (self.sku is None):
            raise ValueError("give one of category or sku")
        if self.within is not None:
            try:
                length = parse_duration(self.within)
            except (ValueError, OverflowError):
                raise ValueError(f"within: {self.within!r} is not a duration like 180d or 26w") from None
            if not timedelta(0) < length <= MAX_BOUGHT_WITHIN:
                raise ValueError(f"within: {self.within!r} is not over 0 and at most 3650d")
        return self


class BoughtTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bought: BoughtSpec


class AllOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list[Condition] = Field(min_length=1)


class AnyOf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    any: list[Condition] = Field(min_length=1)


class Not(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    not_: Condition = Field(alias="not")


#: Each kind of condition, by the key that names it.
KINDS: dict[str, type[BaseModel]] = {
    "all": AllOf,
    "any": AnyOf,
    "not": Not,
    "trait": TraitTest,
    "tag": TagTest,
    "rfm": RfmTest,
    "orders_in_last_days": OrdersTest,
    "last_purchase_within_days": LastPurchaseTest,
    "no_purchase_for_days": NoPurchaseTest,
    "lifecycle": LifecycleTest,
    "spent_in_year": SpentTest,
    "subscribed": SubscribedTest,
    "locale": LocaleTest,
    "timezone": TimezoneTest,
    "bought": BoughtTest,
}


def _kind(value: Any) -> str | None:
    """Which kind a condition is, by its naming key (so a mistake is reported against that kind
    alone, not against every kind it is not)."""
    if isinstance(value, BaseModel):
        return next(key for key, kind in KINDS.items() if isinstance(value, kind))
    if isinstance(value, dict):
        return next((key for key in KINDS if key in value), None)
    return None


Condition = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[Not, Tag("not")]
    | Annotated[TraitTest, Tag("trait")]
    | Annotated[TagTest, Tag("tag")]
    | Annotated[RfmTest, Tag("rfm")]
    | Annotated[OrdersTest, Tag("orders_in_last_days")]
    | Annotated[LastPurchaseTest, Tag("last_purchase_within_days")]
    | Annotated[NoPurchaseTest, Tag("no_purchase_for_days")]
    | Annotated[LifecycleTest, Tag("lifecycle")]
    | Annotated[SpentTest, Tag("spent_in_year")]
    | Annotated[SubscribedTest, Tag("subscribed")]
    | Annotated[LocaleTest, Tag("locale")]
    | Annotated[TimezoneTest, Tag("timezone")]
    | Annotated[BoughtTest, Tag("bought")],
    Discriminator(
        _kind,
        custom_error_type="unknown_condition",
        custom_error_message="not a segment condition: start it with one of " + ", ".join(KINDS),
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


class Segment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")
    title: str | None = None
    description: str | None = None
    where: Condition


def tests_of(condition: Any) -> Iterator[Any]:
    """Every test in a condition, depth first."""
    if isinstance(condition, AllOf | AnyOf):
        for child in condition.all if isinstance(condition, AllOf) else condition.any:
            yield from tests_of(child)
    elif isinstance(condition, Not):
        yield from tests_of(condition.not_)
    else:
        yield condition


def uses_rfm(condition: Any) -> bool:
    """Whether evaluating `condition` needs the customers' purchases."""
    if isinstance(condition, AllOf):
        return any(uses_rfm(c) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(uses_rfm(c) for c in condition.any)
    if isinstance(condition, Not):
        return uses_rfm(condition.not_)
    return isinstance(condition, RfmTest | LastPurchaseTest | NoPurchaseTest | SpentTest)


def uses_lifecycle(condition: Any) -> bool:
    """Whether evaluating `condition` needs the customers' lifecycle stages."""
    return any(isinstance(test, LifecycleTest) for test in tests_of(condition))
