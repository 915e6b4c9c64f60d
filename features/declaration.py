"""What a feature is declared with: its family, entity, counts and transform.

A :class:`Feature` names its entity, window and family, says in Chinese and
English what its value means, and says how it is computed: a transform from
:mod:`duanka.features.values` applied to inputs that are either columns of the
application itself or :class:`Aggregate` counts over earlier applications.
The declarations themselves are in :mod:`duanka.features.registry`.

Point-in-time rule shared by every aggregate: for an application applied at
``t``, a window of ``W`` days holds the earlier applications with
``t - W <= applied_at < t`` (same-timestamp applications excluded), a
confirmation counts only when ``confirmed_at < t``, and a joint-punishment
listing only when ``listed_at < t`` (its end only when ``expires_at <= t``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum

import numpy as np

from duanka.features import values


class Family(StrEnum):
    ESCORT = "escort"
    INTERMEDIARY = "intermediary"
    ADDRESS = "address"
    PHONE_DEVICE = "phone_device"
    STAFF = "staff"
    BRANCH = "branch"
    APPLICANT = "applicant"
    FELLOW_VILLAGERS = "fellow_villagers"
    LINKED = "linked_group"


class Entity(Enum):
    """Whose earlier applications an aggregate counts.

    Attributes
    ----------
    label : str
        How aggregate names, index names and running-total columns call it.
    keys : tuple of str
        The application columns that name one entity; an application with any
        of them null has no such entity. Empty for the application itself and
        for the linked group, which reaches its members through
        :data:`duanka.features.registry.LINK_KEYS` (:mod:`duanka.features.linked`).
    """

    APPLICATION = ("application", ())
    APPLICANT = ("applicant", ("applicant_key",))
    ESCORT = ("escort", ("escort_key",))
    INTERMEDIARY = ("intermediary", ("intermediary_key",))
    ADDRESS = ("address", ("address_key",))
    PHONE = ("phone", ("phone_key",))
    PHONE_BLOCK = ("phone_block", ("phone_block_key",))
    DEVICE = ("device", ("device_key",))
    STAFF = ("staff", ("staff_id",))
    STAFF_AT_BRANCH = ("staff_at_branch", ("branch_id", "staff_id"))
    BRANCH = ("branch", ("branch_id",))
    # applicants whose ID numbers share the six-digit home county, opening in one city (老乡)
    ORIGIN_IN_CITY = ("origin_in_city", ("home_region", "branch_city"))
    # the branch's applicants whose address is in one province
    BRANCH_ADDRESS_PROVINCE = ("branch_address_province", ("branch_id", "address_province"))
    LINKED = ("linked", ())

    def __init__(self, label: str, keys: tuple[str, ...]) -> None:
        self.label = label
        self.keys = keys


class Op(StrEnum):
    COUNT = "count"  # earlier applications in the window
    FLAGGED = "flagged"  # ... of which the flag column is true
    DISTINCT = "distinct"  # distinct non-null values of a column among them
    OTHERS = "others"  # ... other than the asking application's own value (other applicants)
    CONFIRMED = "confirmed"  # ... of which confirmed as mules before t
    LISTED = "listed"  # ... of which the applicant had been listed (joint-punishment list) before t
    LISTINGS_ENDED = "listings_ended"  # the applicant's own listings that had ended by t; no window
    LINKED = "linked"  # one statistic of the linked group (features.linked)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One point-in-time count over an entity's earlier applications.

    ``column`` is the flag for :attr:`Op.FLAGGED`, the counted column for
    :attr:`Op.DISTINCT` and :attr:`Op.OTHERS`, and the statistic for :attr:`Op.LINKED`.
    ``window_days`` is None only for :attr:`Op.LISTINGS_ENDED`, which counts
    listings, not applications: a listing that ended years ago still counts.
    """

    entity: Entity
    op: Op
    window_days: int | None
    column: str | None = None
    # computed once: the online store looks counts up by name ~140 times per application
    name: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.window_days is None) != (self.op is Op.LISTINGS_ENDED):
            raise ValueError(f"{self.op}: a window is required for applications and absent for listings")
        what = f"{self.op}_{self.column}" if self.column else str(self.op)
        span = "ever" if self.window_days is None else f"{self.window_days}d"
        object.__setattr__(self, "name", f"{self.entity.label}__{what}__{span}")

    @property
    def window_us(self) -> int:
        """The window's length in microseconds (the engines' time unit)."""
        if self.window_days is None:
            raise ValueError(f"{self.name} has no window")
        return self.window_days * values.DAY_US

    @property
    def windowed(self) -> bool:
        """Whether it is a plain count over the window's rows (see :meth:`sql`)."""
        return self.op in (Op.COUNT, Op.FLAGGED, Op.DISTINCT, Op.OTHERS)

    def sql(self) -> str:
        """The count as SQL over the rows in its window; DuckDB and SQLite read it alike."""
        if self.op is Op.COUNT:
            return "COUNT(*)"
        if self.op is Op.FLAGGED:
            return f"COUNT(*) FILTER (WHERE {self.column})"
        if self.op is Op.DISTINCT:
            return f"COUNT(DISTINCT {self.column})"
        if self.op is Op.OTHERS:  # the asking application's value is bound as :column
            return f"COUNT(DISTINCT {self.column}) FILTER (WHERE {self.column} IS NOT :{self.column})"
        raise ValueError(f"{self.name} is not a plain window count")

    def definition(self) -> dict[str, object]:
        """What decides its value, for the feature-set version."""
        return {
            "entity_keys": list(self.entity.keys),
            "op": str(self.op),
            "window_days": self.window_days,
            "column": self.column,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Feature:
    """A declared feature.

    Parameters
    ----------
    name : str
        Column name in training sets and position name in online vectors.
    family : Family
    entity : Entity
        The entity the value is about (:attr:`Entity.APPLICATION` for the
        application's own facts). When the application has no such entity
        (no escort, say) the value is NaN.
    window_days : int or None
        Look-back window; ``None`` for facts of the application itself and
        for the applicant's ended listings (counted whenever they ended).
    zh, en : str
        What a value means, with a ``{value}`` placeholder for explanations.
    transform : callable
        A function of :mod:`duanka.features.values`, applied to ``inputs`` in order.
    inputs : tuple
        Column names of the application (str) or :class:`Aggregate` counts.
    codes : tuple of str
        For encoded categories: the category whose code is each position.
    in_model : bool
        Whether :data:`duanka.features.registry.MODEL_FEATURES` includes it.
    monotone : {-1, 0, 1}
        The direction the model's score must follow as the value grows, all else fixed: +1
        never lower, -1 never higher, 0 free. Declared only where domain knowledge leaves no
        doubt (more confirmed mules or listed applicants among an application's links never
        make it safer); training passes it to LightGBM as ``monotone_constraints``
        (:func:`duanka.features.registry.monotone_constraints`).
    """

    name: str
    family: Family
    entity: Entity
    window_days: int | None
    zh: str
    en: str
    transform: Callable[..., np.ndarray]
    inputs: tuple[str | Aggregate, ...]
    codes: tuple[str, ...] = ()
    in_model: bool = True
    monotone: int = 0
    aggregates: tuple[Aggregate, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.monotone not in (-1, 0, 1):
            raise ValueError(f"{self.name}: monotone must be -1, 0 or 1, not {self.monotone!r}")
        found = tuple(i for i in self.inputs if isinstance(i, Aggregate))
        object.__setattr__(self, "aggregates", found)

    def evaluate(self, columns: Mapping[str, np.ndarray], counts: Mapping[str, np.ndarray]) -> np.ndarray:
        """Values from the application's own ``columns`` and aggregate ``counts`` by name."""
        args = [columns[i] if isinstance(i, str) else counts[i.name] for i in self.inputs]
        return values.number(self.transform(*args))

    def describe(self, value: float, language: str = "zh") -> str:
        """The description with ``value`` filled in (:meth:`shown`)."""
        return (self.zh if language == "zh" else self.en).format(value=self.shown(value, language))

    def shown(self, value: float, language: str = "zh") -> str:
        """A value as a person reads it: a category by name, a share as a percentage, a
        difference of shares in percentage points, an integer without decimals."""
        value = float(value)
        if self.codes and value.is_integer() and 0 <= value < len(self.codes):
            return str(self.codes[int(value)])
        if self.transform is values.share:
            # a rare share is not "0%": under one percent it keeps a decimal (0.4%)
            return f"{value * 100:.1f}%" if 0 < value < 0.01 else f"{round(value * 100)}%"
        if self.transform in (values.share_difference, values.excess_share):
            points = round(value * 100)
            return f"{points}个百分点" if language == "zh" else f"{points} percentage points"
        return str(int(value)) if value.is_integer() else str(round(value, 2))

    def definition(self) -> dict[str, object]:
        """What decides this feature's values, for :data:`duanka.features.registry.FEATURE_SET_VERSION`.

        Not the words (``zh``, ``en``: a corrected translation changes no value), nor the
        family (a grouping for reports), nor where the transform's module is imported from
        (the same function under another package name computes the same values). Whether
        the model reads it is in the version through the model's list. Nor ``monotone``: it
        constrains the model, not the values, and a model records it in its booster's parameters.
        """
        return {
            "name": self.name,
            "entity_keys": list(self.entity.keys),
            "window_days": self.window_days,
            "transform": self.transform.__qualname__,
            "inputs": [i if isinstance(i, str) else i.definition() for i in self.inputs],
            "codes": list(self.codes),
        }
