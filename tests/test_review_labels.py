"""A reviewer's confirmations are kept in the event store as labels, once, never over an earlier one."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from duanka.data.review_labels import REVIEW, store_review_confirmations


def test_review_confirmations_are_stored_once_and_never_over_an_earlier_label(served_bank, tmp_path):
    store = served_bank.copy_store(tmp_path / "store")
    labels = store.labels().to_pandas()
    labelled = labels["application_id"].iloc[0]
    unlabelled = next(
        a
        for a in store.applications(["application_id"])["application_id"].to_pylist()
        if a not in set(labels["application_id"])
    )
    at = datetime(2025, 3, 2, 10, 30, tzinfo=UTC)
    stored = store_review_confirmations(
        [(unlabelled, at), (labelled, at), (unlabelled, at)], store, served_bank.keys
    )
    assert (stored.stored, stored.already_labelled) == (1, 1)
    after = store.labels().to_pandas().set_index("application_id")
    assert after.loc[unlabelled, "source"] == REVIEW and after.loc[
        unlabelled, "confirmed_at"
    ] == pd.Timestamp(at)
    assert after.loc[labelled, "source"] == labels.set_index("application_id").loc[labelled, "source"]
    again = store_review_confirmations([(unlabelled, at)], store, served_bank.keys)
    assert (again.stored, again.already_labelled) == (0, 1)
    assert len(store.labels()) == len(labels) + 1
