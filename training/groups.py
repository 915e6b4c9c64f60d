"""Ring-level catch rates: does the model stop mule groups, and how early?

Row-level recall counts accounts; a bank cares about rings. A ring is caught once any of its
members is flagged (the branch then looks at the rest), and the cost of being late is the
members opened before that first flag.

This is evaluation only: the group and scheme of a mule come from the synthetic bank's
``truth.csv``, which is never an input to features or training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

_FRAME_COLUMNS = ("application_id", "applied_at", "group_id", "scheme", "is_mule")
_TRUTH_COLUMNS = ("application_id", "is_mule", "scheme", "group_id")
_SUMMARY_COLUMNS = ("groups", "members", "caught_any", "caught_half", "median_opened_before_first_flag")


@dataclass(frozen=True)
class GroupCatch:
    """Catch rates of mule groups.

    Attributes
    ----------
    groups : pandas.DataFrame
        One row per mule group (index ``group_id``): ``scheme``, ``members``, ``flagged``,
        ``opened_before_first_flag``, ``caught_any``, ``caught_half``.
    by_scheme : pandas.DataFrame
        One row per scheme: ``groups``, ``members``, ``caught_any`` (share of groups with at
        least one member flagged), ``caught_half`` (share with at least half flagged),
        ``median_opened_before_first_flag``.
    overall : pandas.Series
        The same figures over all groups.
    """

    groups: pd.DataFrame
    by_scheme: pd.DataFrame
    overall: pd.Series

    def to_frame(self) -> pd.DataFrame:
        """``by_scheme`` with the overall figures appended as the row ``all``."""
        return pd.concat([self.by_scheme, self.overall.rename("all").to_frame().T])


def _summary(groups: pd.DataFrame) -> pd.Series:
    return pd.Series(
        {
            "groups": float(len(groups)),
            "members": float(groups["members"].sum()),
            "caught_any": groups["caught_any"].mean(),
            "caught_half": groups["caught_half"].mean(),
            "median_opened_before_first_flag": groups["opened_before_first_flag"].median(),
        },
        index=list(_SUMMARY_COLUMNS),
    )


def group_catch_rates(frame: pd.DataFrame, flagged: np.ndarray) -> GroupCatch:
    """How many mule groups the flags reach, by scheme.

    Parameters
    ----------
    frame : pandas.DataFrame
        Columns ``application_id``, ``applied_at`` (comparable timestamps), ``group_id``
        (null for no group), ``scheme``, ``is_mule`` (0/1). Only rows with ``is_mule == 1``
        and a group count: a legitimate applicant who shares a group id is not a ring member.
    flagged : array of bool, shape (len(frame),)
        Whether each row was flagged (e.g. in the top alert rate).

    Returns
    -------
    GroupCatch
        "Opened before the first flag" counts the members whose ``applied_at`` is strictly
        earlier than the first flagged member's; for a group never flagged it counts all its
        members, so the median includes the rings that got away in full. A group's scheme
        is its members' most frequent one.
    """
    missing = [c for c in _FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns {missing}")
    flagged = np.asarray(flagged)
    if flagged.shape != (len(frame),) or flagged.dtype != bool:
        expected = (len(frame),)
        raise ValueError(f"flagged must be booleans of shape {expected}, got {flagged.dtype} {flagged.shape}")

    in_group = (frame["is_mule"] == 1).to_numpy() & frame["group_id"].notna().to_numpy()
    members = (
        frame.loc[in_group, ["group_id", "scheme", "applied_at"]]
        .assign(flagged=flagged[in_group])
        # In time order, a tie between two schemes of one group goes to the earlier member's.
        .sort_values("applied_at", kind="stable")
    )
    # NaT for a group never flagged.
    first = members["applied_at"].where(members["flagged"]).groupby(members["group_id"]).transform("min")
    members["before"] = first.isna() | (members["applied_at"] < first)

    groups = members.groupby("group_id").agg(
        scheme=("scheme", lambda s: s.value_counts(dropna=False).index[0]),
        members=("flagged", "size"),
        flagged=("flagged", "sum"),
        opened_before_first_flag=("before", "sum"),
    )
    groups["caught_any"] = groups["flagged"] > 0
    groups["caught_half"] = 2 * groups["flagged"] >= groups["members"]

    by_scheme = pd.DataFrame(
        {scheme: _summary(part) for scheme, part in groups.groupby("scheme", dropna=False)},
        index=list(_SUMMARY_COLUMNS),
    ).T
    by_scheme.index.name = "scheme"
    return GroupCatch(groups=groups, by_scheme=by_scheme, overall=_summary(groups))


def load_truth(path: Path) -> pd.DataFrame:
    """Read the synthetic bank's ``truth.csv``.

    Parameters
    ----------
    path : Path
        CSV with ``application_id``, ``is_mule`` (0/1), ``scheme``, ``group_id`` (empty when
        the application belongs to no group).

    Returns
    -------
    pandas.DataFrame
        Identifiers as strings (an id such as ``NA`` stays an id), empty ``group_id`` and
        ``scheme`` as missing, ``is_mule`` as int.
    """
    truth = pd.read_csv(
        path,
        dtype={"application_id": str, "scheme": str, "group_id": str},
        keep_default_na=False,
        na_values={"scheme": [""], "group_id": [""]},
    )
    missing = [c for c in _TRUTH_COLUMNS if c not in truth.columns]
    if missing:
        raise ValueError(f"{path}: lacks the columns {missing}")
    if not truth["is_mule"].isin((0, 1)).all():
        raise ValueError(f"{path}: is_mule must be 0 or 1")
    if truth["application_id"].duplicated().any():
        raise ValueError(f"{path}: application_id is not unique")
    return truth.astype({"is_mule": int})
