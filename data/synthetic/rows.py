"""Applications before they are written, and how they are written.

A :class:`Draft` holds one column per field, as numbers where the contract wants
text (branch, staff, device, intermediary, instants), so that sorting and slicing
a month stay cheap. :func:`render` turns a draft into the contract's columns and
is the one place that applies the contract's channel and account-type rules:
no staff and no escort on self-service openings, a device only on them, and the
corporate-only columns only on corporate accounts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.contract import ACCOUNT_TYPES, APPLICATIONS, CHANNELS
from duanka.data.synthetic.identifiers import INTERMEDIARY_DIGITS, device_ids, numbered
from duanka.data.synthetic.network import Network

SCHEMES = (
    "legit",
    "university",
    "factory",
    "accounting_agency",
    "escort_ring",
    "shell_company",
    "insider",
    "solo_seller",
)
MULE_SCHEMES = ("escort_ring", "shell_company", "insider", "solo_seller")
COUNTER, MOBILE, AGENT = (CHANNELS.index(c) for c in ("counter", "mobile", "agent"))
APPLICATION_DIGITS = 9  # A000000001: room for a billion applications
TRUTH_COLUMNS = ("application_id", "is_mule", "scheme", "group_id")

Column = np.ndarray | pa.Array

_REQUIRED = (
    "at",  # int64 local seconds, see data.synthetic.period
    "branch",  # index into the Network's branches
    "channel",  # index into CHANNELS
    "id_number",  # string
    "phone",  # int64
    "tenure",  # int64 days, -1 unknown
    "address",  # string
    "u_shield",
    "mobile_banking",
    "payment_binding",
)
_OPTIONAL: dict[str, Callable[[int], Column]] = {
    "corporate": lambda n: np.zeros(n, bool),
    "staff": lambda n: np.full(n, -1),  # index into the Network's staff
    "device": lambda n: np.full(n, -1),  # < DEVICE_SPACE
    "escort": lambda n: pa.nulls(n, pa.string()),  # the escort's resident ID
    "intermediary": lambda n: np.full(n, -1),  # 7-digit number
    "photo_tampered": lambda n: np.zeros(n, bool),
    "onsite": lambda n: np.zeros(n, bool),
    "company_id": lambda n: pa.nulls(n, pa.string()),
    "company_age": lambda n: np.zeros(n, np.int64),
    "group": lambda n: np.full(n, -1),  # numbered per scheme
    "reapplied": lambda n: np.zeros(n, bool),  # a listed person trying again (data.synthetic.watchlist)
}


class Draft:
    """Applications as named columns of equal length, in no particular order."""

    def __init__(self, columns: dict[str, Column]) -> None:
        self.columns = columns

    @classmethod
    def build(cls, scheme: str, **columns: Column) -> Draft:
        """A draft of one scheme's rows; optional fields left out take their defaults.

        Raises
        ------
        ValueError
            On an unknown or missing field, or columns of different lengths.
        """
        unknown = set(columns) - set(_REQUIRED) - set(_OPTIONAL)
        missing = set(_REQUIRED) - set(columns)
        if unknown or missing:
            raise ValueError(f"unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        n = len(columns["at"])
        if any(len(c) != n for c in columns.values()):
            raise ValueError("columns of a draft must have equal lengths")
        full = {name: columns[name] if name in columns else default(n) for name, default in _OPTIONAL.items()}
        full.update((name, columns[name]) for name in _REQUIRED)
        full["scheme"] = np.full(n, SCHEMES.index(scheme), np.int8)
        return cls(full)

    def __len__(self) -> int:
        return len(self.columns["at"])

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def take(self, rows: np.ndarray) -> Draft:
        """The rows at the given positions, in that order."""
        index = pa.array(rows)
        return Draft(
            {k: c.take(index) if isinstance(c, pa.Array) else c[rows] for k, c in self.columns.items()}
        )

    @staticmethod
    def concat(drafts: Sequence[Draft]) -> Draft:
        """The rows of all ``drafts``, one after the other."""
        names = drafts[0].columns
        return Draft(
            {
                k: pa.concat_arrays([d[k] for d in drafts])
                if isinstance(names[k], pa.Array)
                else np.concatenate([d[k] for d in drafts])
                for k in names
            }
        )


def interleave(n: int, parts: Sequence[tuple[np.ndarray, pa.Array]]) -> pa.Array:
    """One column of ``n`` rows from values computed for disjoint sets of rows.

    Parameters
    ----------
    n : int
    parts : sequence of (rows, values)
        Row positions and their values; together the positions cover 0..n-1 once.
    """
    order = np.concatenate([rows for rows, _ in parts])
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    return pa.concat_arrays([values for _, values in parts]).take(pa.array(position))


def stacked(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per-group arrays of the same names, concatenated name by name."""
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def sparse(n: int, rows: np.ndarray, values: pa.Array) -> pa.Array:
    """A column of ``n`` rows holding ``values`` at ``rows`` (increasing) and null elsewhere."""
    others = np.setdiff1d(np.arange(n), rows, assume_unique=True)
    return interleave(n, [(rows, values), (others, pa.nulls(len(others), values.type))])


def local_timestamps(at: np.ndarray) -> pa.Array:
    """ISO 8601 text with the bank's offset: ``2024-03-05T10:12:00+08:00``."""
    text = pc.cast(pa.array(at, pa.timestamp("s")), pa.string())
    return pc.binary_join_element_wise(pc.replace_substring(text, " ", "T"), "+08:00", "")


def application_ids(numbers: np.ndarray) -> pa.Array:
    """``A`` followed by the 1-based application number, zero-padded."""
    return numbered("A", numbers, APPLICATION_DIGITS)


def _null_where(values: pa.Array, mask: np.ndarray) -> pa.Array:
    return pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)


def _flags(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=bool))


def render(draft: Draft, network: Network, ids: pa.Array) -> tuple[pa.Table, pa.Table]:
    """The contract's applications table and the truth table of ``draft``.

    Parameters
    ----------
    draft : Draft
        Rows in the order they are to be written.
    network : Network
        Resolves branch and staff indices to ids.
    ids : pyarrow.Array
        The application id of each row.

    Returns
    -------
    (pyarrow.Table, pyarrow.Table)
        Applications, columns exactly as :data:`duanka.data.contract.APPLICATIONS`, and
        truth: ``application_id, is_mule (0/1), scheme, group_id``.
    """
    channel = draft["channel"]
    mobile = channel == MOBILE
    personal = ~draft["corporate"]
    branch = pa.array(draft["branch"])
    staff = draft["staff"]
    device = draft["device"]
    intermediary = draft["intermediary"]
    tenure = draft["tenure"]
    columns = {
        "application_id": ids,
        "applied_at": local_timestamps(draft["at"]),
        "branch_id": network.branch_id.take(branch),
        "branch_region": network.branch_region.take(branch),
        "channel": pa.array(CHANNELS).take(pa.array(channel)),
        "account_type": pa.array(ACCOUNT_TYPES).take(pa.array(draft["corporate"].astype(np.int8))),
        "staff_id": _null_where(network.staff_id.take(pa.array(np.maximum(staff, 0))), mobile | (staff < 0)),
        "id_number": draft["id_number"],
        "phone": pc.cast(pa.array(draft["phone"]), pa.string()),
        "phone_tenure_days": pa.array(tenure, pa.int64(), mask=tenure < 0),
        "address": draft["address"],
        "device_id": _null_where(device_ids(np.maximum(device, 0)), ~mobile | (device < 0)),
        "escort_id": _null_where(draft["escort"], mobile),
        "intermediary_id": _null_where(
            numbered("I", np.maximum(intermediary, 0), INTERMEDIARY_DIGITS), intermediary < 0
        ),
        "photo_tampered": _flags(draft["photo_tampered"]),
        "onsite_verified": pa.array(np.asarray(draft["onsite"], bool), mask=personal),
        "company_id": _null_where(draft["company_id"], personal),
        "company_age_days": pa.array(draft["company_age"], pa.int64(), mask=personal),
        "u_shield": _flags(draft["u_shield"]),
        "mobile_banking": _flags(draft["mobile_banking"]),
        "payment_binding": _flags(draft["payment_binding"]),
    }
    scheme = draft["scheme"]
    group = draft["group"]
    scheme_names = pa.array(SCHEMES).take(pa.array(scheme))
    group_ids = pc.binary_join_element_wise(scheme_names, numbered("-", np.maximum(group, 0), 5), "")
    truth = {
        "application_id": ids,
        "is_mule": pa.array(np.isin(scheme, [SCHEMES.index(s) for s in MULE_SCHEMES]).astype(np.int8)),
        "scheme": scheme_names,
        "group_id": _null_where(group_ids, group < 0),
    }
    return (
        pa.table([columns[name] for name in APPLICATIONS.names], names=list(APPLICATIONS.names)),
        pa.table(truth),
    )
