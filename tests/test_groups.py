"""Ring-level catch rates on a handmade bank of three mule groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from duanka.training.groups import group_catch_rates, load_truth


def _bank() -> tuple[pd.DataFrame, np.ndarray]:
    """Rows: (application_id, day applied, group_id, scheme, is_mule, flagged)."""
    rows = [
        # g1, rental: four members, only the third flagged.
        ("a1", 1, "g1", "rental", 1, False),
        ("a2", 2, "g1", "rental", 1, False),
        ("a3", 3, "g1", "rental", 1, True),
        ("a4", 4, "g1", "rental", 1, False),
        # g2, rental: three members, none flagged.
        ("b1", 1, "g2", "rental", 1, False),
        ("b2", 5, "g2", "rental", 1, False),
        ("b3", 9, "g2", "rental", 1, False),
        # g3, shell_company: two of four flagged, the first on day 2 alongside another member.
        ("c1", 2, "g3", "shell_company", 1, True),
        ("c2", 2, "g3", "shell_company", 1, False),
        ("c3", 3, "g3", "shell_company", 1, True),
        ("c4", 6, "g3", "shell_company", 1, False),
        # Not ring members: a legitimate applicant sharing g2's id, a lone mule, an ordinary customer.
        ("x1", 0, "g2", "rental", 0, True),
        ("x2", 0, None, "lone", 1, True),
        ("x3", 0, None, None, 0, False),
    ]
    frame = pd.DataFrame(rows, columns=["application_id", "day", "group_id", "scheme", "is_mule", "flagged"])
    frame["applied_at"] = pd.Timestamp("2024-03-01") + pd.to_timedelta(frame.pop("day"), unit="D")
    return frame.drop(columns="flagged"), frame["flagged"].to_numpy()


def test_per_group_catch():
    frame, flagged = _bank()
    groups = group_catch_rates(frame, flagged).groups
    assert groups.index.tolist() == ["g1", "g2", "g3"]
    # g1 caught at its third member: two opened before; 1 of 4 flagged is less than half.
    assert groups.loc["g1", "opened_before_first_flag"] == 2
    assert groups.loc["g1", "caught_any"]
    assert not groups.loc["g1", "caught_half"]
    # g2 never flagged: all three members got through; the legitimate x1 is not a member.
    assert groups.loc["g2", "members"] == 3
    assert groups.loc["g2", "opened_before_first_flag"] == 3
    assert not groups.loc["g2", "caught_any"]
    # g3: exactly half flagged counts; c2 opened the same day as the first flag, not before.
    assert groups.loc["g3", "flagged"] == 2
    assert groups.loc["g3", "caught_half"]
    assert groups.loc["g3", "opened_before_first_flag"] == 0


def test_per_scheme_and_overall_rates():
    frame, flagged = _bank()
    catch = group_catch_rates(frame, flagged)
    expected = pd.DataFrame(
        {
            "groups": [2.0, 1.0],
            "members": [7.0, 4.0],
            "caught_any": [0.5, 1.0],
            "caught_half": [0.0, 1.0],
            "median_opened_before_first_flag": [2.5, 0.0],
        },
        index=pd.Index(["rental", "shell_company"], name="scheme"),
    )
    pd.testing.assert_frame_equal(catch.by_scheme, expected)
    assert catch.overall.to_dict() == pytest.approx(
        {
            "groups": 3,
            "members": 11,
            "caught_any": 2 / 3,
            "caught_half": 1 / 3,
            "median_opened_before_first_flag": 2,
        }
    )
    assert catch.to_frame().index.tolist() == ["rental", "shell_company", "all"]


def test_row_order_does_not_matter():
    frame, flagged = _bank()
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled = group_catch_rates(frame.iloc[order].reset_index(drop=True), flagged[order])
    pd.testing.assert_frame_equal(shuffled.groups, group_catch_rates(frame, flagged).groups)


def test_no_mule_groups_gives_empty_rates():
    frame, _ = _bank()
    catch = group_catch_rates(frame.assign(is_mule=0), np.zeros(len(frame), dtype=bool))
    assert catch.by_scheme.empty
    assert catch.overall["groups"] == 0
    assert np.isnan(catch.overall["caught_any"])


def test_rejects_misaligned_flags_and_missing_columns():
    frame, flagged = _bank()
    with pytest.raises(ValueError, match="shape"):
        group_catch_rates(frame, flagged[:-1])
    with pytest.raises(ValueError, match="booleans"):
        group_catch_rates(frame, flagged.astype(int))
    with pytest.raises(ValueError, match="scheme"):
        group_catch_rates(frame.drop(columns="scheme"), flagged)


def test_load_truth(tmp_path: Path):
    path = tmp_path / "truth.csv"
    path.write_text(
        "application_id,is_mule,scheme,group_id\nNA,1,rental,g1\n0042,0,,\nA7,1,lone,\n",
        encoding="utf-8",
    )
    truth = load_truth(path)
    assert truth["application_id"].tolist() == ["NA", "0042", "A7"]
    assert truth["is_mule"].tolist() == [1, 0, 1]
    assert truth["group_id"].isna().tolist() == [False, True, True]
    assert truth["scheme"].isna().tolist() == [False, True, False]


def test_load_truth_rejects_duplicate_ids(tmp_path: Path):
    path = tmp_path / "truth.csv"
    path.write_text("application_id,is_mule,scheme,group_id\nA1,1,rental,g1\nA1,0,,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not unique"):
        load_truth(path)
