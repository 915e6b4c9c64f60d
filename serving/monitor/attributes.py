"""The groups a decision is counted in for fairness: age band, origin, channel, account type, gender.

Age, channel and account type are model features (``applicant_age``, ``channel``,
``corporate``), read from the feature vector each answer kept. Origin (out of province: the
applicant's home province is not the branch's) and gender are no model features: they come
from the prepared application the service stored with its answer (``responses.event``) or, for
a batch decision (``duanka score --record``, which stores none), from the event store's
``applications`` table, joined on ``application_id``. A group that cannot be found is "none".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from duanka.features.registry import BY_NAME, LINK_KEYS
from duanka.training.monitoring import age_band

DIMENSIONS = ("age band", "origin", "channel", "account type", "gender")
LOCAL, OUT_OF_PROVINCE = "local", "out of province"
_STORE_COLUMNS = ["application_id", "home_province", "branch_province", "gender"]


@dataclass
class StoreApplications:
    """Origin and gender of batch decisions, from the event store's applications (read once, lazily).

    Parameters
    ----------
    parts : sequence of Path
        The store's ``applications`` Parquet parts (``EventStore.parts("applications")``).
    """

    parts: Sequence[Path]
    _table: pd.DataFrame | None = field(default=None, init=False, repr=False)

    def lookup(self, application_ids: Sequence[str]) -> pd.DataFrame:
        """``origin`` and ``gender`` of ``application_ids`` (index), missing where not stored."""
        if self._table is None:
            self._table = self._read()
        return self._table.reindex(pd.Index(application_ids, name="application_id"))

    def links(self, application_ids: Sequence[str]) -> dict[str, dict[str, str | None]]:
        """The link keys (pseudonyms) of ``application_ids`` found in the store: rings are drawn from them.

        Read for the few confirmed mules only, with the ids pushed down to the Parquet reader.
        """
        import pyarrow.parquet as pq

        if not self.parts or not application_ids:
            return {}
        table = pq.read_table(
            list(self.parts),
            columns=["application_id", *LINK_KEYS],
            filters=[("application_id", "in", list(application_ids))],
        )
        return {row.pop("application_id"): row for row in table.to_pylist()}

    def _read(self) -> pd.DataFrame:
        import pyarrow.parquet as pq

        if not self.parts:
            return pd.DataFrame(columns=["origin", "gender"], index=pd.Index([], name="application_id"))
        table = pq.read_table(list(self.parts), columns=_STORE_COLUMNS).to_pandas()
        home, branch = table["home_province"].to_numpy(), table["branch_province"].to_numpy()
        origin = np.where(home == branch, LOCAL, OUT_OF_PROVINCE).astype(object)
        frame = pd.DataFrame({"origin": origin, "gender": table["gender"].to_numpy()})
        frame.index = pd.Index(table["application_id"], name="application_id")
        # an application ingested twice is one application
        return frame[~frame.index.duplicated(keep="first")]


def _decoded(codes: np.ndarray, feature: str) -> np.ndarray:
    """A coded model feature's category names (the registry's codes); None where missing."""
    names = BY_NAME[feature].codes
    out = np.full(len(codes), None, dtype=object)
    for i, name in enumerate(names):
        out[codes == i] = name
    return out


def group_attributes(
    application_ids: Sequence[str],
    X: np.ndarray,
    names: Sequence[str],
    events: pd.DataFrame,
    store: StoreApplications | None = None,
) -> pd.DataFrame:
    """Each decision's group in every :data:`DIMENSIONS`.

    Parameters
    ----------
    application_ids : sequence of str
    X : numpy.ndarray
        The decisions' feature vectors, columns ``names``.
    names : sequence of str
    events : pandas.DataFrame
        What the record kept of each decision's prepared application, row for row
        (:data:`duanka.serving.monitor.record.EVENT_COLUMNS`); ``has_event`` False for a batch one.
    store : StoreApplications, optional
        Where batch decisions' origin and gender are looked up.

    Returns
    -------
    pandas.DataFrame
        One column per dimension, object values, None where unknown.
    """
    column = {name: i for i, name in enumerate(names)}
    n = len(application_ids)

    def feature(name: str) -> np.ndarray:
        return X[:, column[name]] if name in column else np.full(n, np.nan)

    def known(values: pd.Series) -> np.ndarray:
        return values.astype(object).where(values.notna(), None).to_numpy()

    corporate = feature("corporate")
    home, branch = (
        events["home_province"].to_numpy(dtype=object),
        events["branch_province"].to_numpy(dtype=object),
    )
    origin = np.where(home == branch, LOCAL, OUT_OF_PROVINCE).astype(object)
    origin[pd.isna(home) | pd.isna(branch)] = None
    channel = _decoded(feature("channel"), "channel")
    # a decision whose answer held no channel: the application's own
    channel = np.where(pd.isna(channel), known(events["event_channel"]), channel)
    frame = pd.DataFrame(
        {
            "age band": known(age_band(feature("applicant_age")).astype(object)),
            "origin": origin,
            "channel": channel,
            "account type": np.where(
                corporate == 1, "corporate", np.where(corporate == 0, "personal", None)
            ).astype(object),
            "gender": known(events["gender"]),
        }
    )
    batch = np.flatnonzero(~events["has_event"].to_numpy(dtype=bool))
    if len(batch) and store is not None:
        found = store.lookup([application_ids[i] for i in batch])
        frame.iloc[batch, 1] = known(found["origin"])
        frame.iloc[batch, 4] = known(found["gender"])
    return frame
