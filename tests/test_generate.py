"""The synthetic bank: valid under the contract, the same for the same seed, and
shaped like the schemes it claims (rates, sizes, look-alikes, adaptation) without
any single field giving the mules away."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from duanka.data.address import address_kinds
from duanka.data.contract import APPLICATIONS, LABELS, WATCHLIST
from duanka.data.identity import parse_resident_id, validate_phone, validate_uscc
from duanka.data.reader import read_raw
from duanka.data.synthetic import GeneratedBank, generate_bank
from duanka.data.validate import validate

VOLUME = 100_000
MONTHS = 12
START = date(2024, 1, 1)
END = pd.Timestamp("2025-01-01", tz="Asia/Shanghai")
BOOLEANS = ("photo_tampered", "u_shield", "mobile_banking", "payment_binding")
CORPORATE_ONLY = [c.name for c in APPLICATIONS.columns if c.corporate_only]
DAY = pd.Timedelta(days=1)


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> GeneratedBank:
    out = tmp_path_factory.mktemp("bank")
    return generate_bank(out, months=MONTHS, applications=VOLUME, seed=11, start=START)


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def rows(bank: GeneratedBank) -> pd.DataFrame:
    """Applications joined with their truth, every cell as written ('' for empty)."""
    frame = _read(bank.applications).merge(_read(bank.truth), on="application_id", validate="1:1")
    frame["at"] = pd.to_datetime(frame["applied_at"])
    frame["month"] = frame["at"].dt.month
    frame["mule"] = frame["is_mule"] == "1"
    frame["kind"] = address_kinds(frame["address"])
    return frame


@pytest.fixture(scope="module")
def labels(bank: GeneratedBank, rows: pd.DataFrame) -> pd.DataFrame:
    frame = _read(bank.labels).merge(rows, on="application_id", how="left", validate="1:1")
    frame["delay"] = pd.to_datetime(frame["confirmed_at"]) - frame["at"]
    return frame


def _scheme(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["scheme"] == name]


def _share(mask: pd.Series) -> float:
    return float(mask.mean())


# --- determinism ------------------------------------------------------------------


def test_the_same_seed_writes_byte_identical_files_and_another_seed_does_not(tmp_path):
    def files(folder: str, seed: int, progress: bool = False) -> list[bytes]:
        bank = generate_bank(tmp_path / folder, months=4, applications=8_000, seed=seed, progress=progress)
        return [p.read_bytes() for p in (bank.applications, bank.labels, bank.truth, bank.watchlist)]

    first = files("a", seed=3)
    assert files("b", seed=3, progress=True) == first
    other = files("c", seed=4)
    assert all(mine != theirs for mine, theirs in zip(first, other, strict=True))


# --- the contract -----------------------------------------------------------------


def test_files_have_the_contract_columns_in_order(bank):
    assert bank.applications.read_text(encoding="utf-8").split("\n", 1)[0] == ",".join(APPLICATIONS.names)
    assert bank.labels.read_text(encoding="utf-8").split("\n", 1)[0] == ",".join(LABELS.names)
    assert _read(bank.truth).columns.tolist() == ["application_id", "is_mule", "scheme", "group_id"]


def test_the_requested_number_of_rows_with_unique_increasing_ids(bank, rows):
    assert bank.n_applications == len(rows) == VOLUME
    assert rows["application_id"].str.fullmatch(r"A\d{9}").all()
    assert rows["application_id"].is_unique
    assert rows["application_id"].is_monotonic_increasing
    assert rows["at"].is_monotonic_increasing


def test_the_generated_files_pass_the_projects_own_validator(bank):
    files = ((bank.applications, APPLICATIONS), (bank.labels, LABELS), (bank.watchlist, WATCHLIST))
    for path, table in files:
        outcome = validate(read_raw(path, table), table)
        assert outcome.rejections.empty, outcome.rejections.head().to_string()
        assert outcome.duplicates_dropped == 0


def test_every_resident_id_is_valid_and_of_age_on_the_day_applied(rows):
    for number, day in zip(rows["id_number"], rows["at"].dt.date, strict=True):
        parse_resident_id(number, day)
    for number, day in zip(rows["escort_id"], rows["at"].dt.date, strict=True):
        if number:
            parse_resident_id(number, day)


def test_every_company_phone_and_region_is_valid(rows):
    corporate = rows[rows["account_type"] == "corporate"]
    assert all(validate_uscc(code) == code for code in corporate["company_id"])
    assert all(validate_phone(phone) == phone for phone in rows["phone"])
    assert rows["branch_region"].str.fullmatch(r"[1-9]\d{5}").all()


def test_ids_follow_the_banks_styles(rows):
    def styled(column: str, pattern: str) -> bool:
        values = rows[column][rows[column] != ""]
        return bool(values.str.fullmatch(pattern).all())

    assert styled("branch_id", r"B\d{7}")
    assert styled("staff_id", r"S\d{8}")
    assert styled("device_id", r"D[0-9a-f]{10}")
    assert styled("intermediary_id", r"I\d{7}")
    assert (rows["staff_id"].str[1:8] == rows["branch_id"].str[1:8])[rows["staff_id"] != ""].all()


def test_timestamps_are_iso_8601_with_the_banks_offset(rows, labels):
    shape = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+08:00"
    assert rows["applied_at"].str.fullmatch(shape).all()
    assert labels["confirmed_at"].str.fullmatch(shape).all()
    assert rows["at"].min() >= pd.Timestamp(START, tz="Asia/Shanghai")
    assert rows["at"].max() < END


def test_booleans_are_written_true_or_false(rows):
    for column in (*BOOLEANS, "onsite_verified"):
        written = set(rows[column][rows[column] != ""])
        assert written == {"true", "false"}, column


def test_corporate_only_columns_are_empty_on_personal_and_filled_on_corporate_accounts(rows):
    personal = rows["account_type"] == "personal"
    for column in CORPORATE_ONLY:
        assert (rows.loc[personal, column] == "").all(), column
        assert (rows.loc[~personal, column] != "").all(), column


def test_self_service_openings_carry_a_device_and_no_staff_or_escort(rows):
    mobile = rows["channel"] == "mobile"
    assert (rows.loc[mobile, "staff_id"] == "").all()
    assert (rows.loc[mobile, "escort_id"] == "").all()
    assert (rows.loc[mobile, "device_id"] != "").all()
    assert (rows.loc[~mobile, "device_id"] == "").all()
    assert (rows.loc[~mobile, "staff_id"] != "").all()


def test_counter_openings_fall_in_branch_hours_and_the_app_runs_at_night_too(rows):
    hour = rows["at"].dt.hour
    counter = rows["channel"] == "counter"
    # Queues that run past closing and insiders working late are the exceptions.
    assert _share(hour[counter].between(9, 16)) > 0.98
    assert hour[counter].between(9, 19).all()
    assert _share(hour[rows["channel"] == "mobile"] < 6) > 0.02


# --- volumes and outcomes -----------------------------------------------------------


def test_about_one_percent_are_mules(bank, rows):
    assert 0.006 <= _share(rows["mule"]) <= 0.016
    assert bank.n_mules == rows["mule"].sum()
    schemes = set(rows.loc[rows["mule"], "scheme"])
    assert schemes == {"escort_ring", "shell_company", "insider", "solo_seller"}


def test_most_mules_are_confirmed_two_weeks_to_nine_months_after_opening(bank, rows, labels):
    assert bank.n_labels == len(labels)
    assert labels["application_id"].is_unique
    assert set(labels["source"]) == {"police_notice", "account_freeze", "investigation"}
    assert 0.78 <= labels["mule"].sum() / rows["mule"].sum() <= 0.92
    assert labels["delay"].between(14 * DAY, 275 * DAY).all()
    # A bank's export is cumulative: confirmations after the period are kept.
    assert (pd.to_datetime(labels["confirmed_at"]) > END).any()


def test_a_few_legitimate_accounts_are_confirmed_by_mistake(rows, labels):
    wrong = (~labels["mule"]).sum()
    assert 0 < wrong <= 0.001 * (~rows["mule"]).sum()


def test_labels_are_in_the_order_the_bank_learned_of_them(labels):
    assert pd.to_datetime(labels["confirmed_at"]).is_monotonic_increasing


# --- schemes ------------------------------------------------------------------------


def test_escort_rings_bring_batches_of_recruits_to_several_branches(rows):
    ring = _scheme(rows, "escort_ring")
    groups = ring.groupby("group_id")
    assert groups.size().between(4, 120).all()
    assert groups["id_number"].nunique().between(4, 40).all()
    assert _share(groups["branch_id"].nunique() >= 2) > 0.6
    assert _share(ring.groupby("id_number")["branch_id"].nunique() > 1) > 0.1
    assert _share(ring["kind"] == "lodging") > 0.5
    assert _share(ring["phone_tenure_days"].replace("", "9999").astype(int) <= 14) > 0.6
    # New SIMs come from one 7-digit number block per ring.
    block = ring["group_id"] + ring["phone"].str[:7]
    assert _share(block.map(block.value_counts()) >= 3) > 0.5
    bundle = ring[list(BOOLEANS[1:])].eq("true").all(axis=1)
    assert _share(bundle) > 0.8


def test_shell_companies_are_young_and_sit_at_shared_virtual_offices(rows):
    shell = _scheme(rows, "shell_company")
    assert (shell["account_type"] == "corporate").all()
    assert shell["company_age_days"].astype(int).between(1, 60).all()
    assert _share(shell["kind"] == "office") == 1.0
    assert _share(shell["address"].str.contains("众创空间|孵化器|托管")) > 0.4
    assert _share(shell["intermediary_id"] != "") > 0.6


def test_insiders_open_many_corporate_accounts_without_checks_or_with_doctored_photos(rows):
    insider = _scheme(rows, "insider")
    assert (insider["account_type"] == "corporate").all()
    assert (insider.groupby("group_id")["staff_id"].nunique() == 1).all()
    assert insider.groupby("group_id").size().min() >= 50
    unchecked = insider["onsite_verified"] == "false"
    tampered = insider["photo_tampered"] == "true"
    assert _share(unchecked) > 0.5
    assert _share(tampered[~unchecked]) > 0.5


def test_solo_sellers_show_only_weak_signals(rows):
    solo = _scheme(rows, "solo_seller")
    assert solo["group_id"].eq("").all()
    assert _share(solo["escort_id"] != "") < 0.05
    assert _share(solo["kind"] == "residential") > 0.5


# --- hard negatives -----------------------------------------------------------------


def test_university_batches_open_every_september(rows):
    university = _scheme(rows, "university")
    assert (university["month"] == 9).all()
    assert university.groupby("group_id").size().between(100, 600).all()
    age = university["at"].dt.year - university["id_number"].str[6:10].astype(int)
    assert age.between(16, 21).all()
    assert _share(university["kind"] == "dormitory") == 1.0
    assert _share(~university["id_number"].str.startswith("44")) > 0.4
    assert _share(university["phone_tenure_days"].replace("", "9999").astype(int) <= 10) > 0.4
    escorts = university.loc[university["escort_id"] != "", "escort_id"]
    assert len(escorts) > 0.4 * len(university)
    assert escorts.nunique() <= 4 * university["group_id"].nunique()


def test_factory_hr_staff_escort_dozens_of_migrant_workers_from_dormitories(rows):
    factory = _scheme(rows, "factory")
    assert factory.groupby("group_id").size().between(12, 80).all()
    assert _share(factory["escort_id"] != "") > 0.5
    assert _share(factory["kind"] == "dormitory") > 0.6
    assert _share(~factory["id_number"].str.startswith("44")) > 0.7
    dispatch = factory.loc[factory["intermediary_id"] != "", "intermediary_id"]
    assert dispatch.value_counts().max() >= 50  # a labour-dispatch agency recurs


def test_accounting_agencies_register_many_young_companies_at_shared_addresses(rows):
    agency = _scheme(rows, "accounting_agency")
    assert (agency["account_type"] == "corporate").all()
    assert agency["company_age_days"].astype(int).between(1, 90).all()
    assert agency.groupby("intermediary_id").size().drop("", errors="ignore").max() >= 50
    building = agency["address"].str.extract(r"(?:区|镇|街道|松山湖)(.+?\d+[号號])")[0]
    assert building.value_counts().max() >= 10


def test_no_single_field_separates_the_mules(rows):
    tenure = rows["phone_tenure_days"].replace("", "99999").astype(int)
    company_age = rows["company_age_days"].replace("", "99999").astype(int)
    signals = {
        "escort recorded": rows["escort_id"] != "",
        "lodging address": rows["kind"] == "lodging",
        "dormitory address": rows["kind"] == "dormitory",
        "new SIM": tenure < 30,
        "full bundle": rows[list(BOOLEANS[1:])].eq("true").all(axis=1),
        "app at night": (rows["channel"] == "mobile") & (rows["at"].dt.hour < 6),
        "intermediary": rows["intermediary_id"] != "",
        "photo tampered": rows["photo_tampered"] == "true",
        "no on-site check": rows["onsite_verified"] == "false",
        "young company": company_age < 90,
        "from another province": ~rows["id_number"].str.startswith("44"),
    }
    mule = rows["mule"]
    for name, flagged in signals.items():
        assert mule[flagged].mean() < 0.5, f"{name} alone finds mules too precisely"
        assert flagged[mule].mean() < 0.9, f"{name} alone finds nearly every mule"
    clean = ~pd.concat(signals, axis=1).any(axis=1)
    assert (clean & mule).sum() > 0, "some mules show none of the signals"


# --- adaptation ---------------------------------------------------------------------

VARIANT = re.compile(r"[０-９號幢座室]|号楼|房间|-|^广东省")


def test_rings_record_fewer_escorts_and_move_to_the_app_later_in_the_period(rows):
    ring = _scheme(rows, "escort_ring")
    early, late = ring[ring["month"] <= 6], ring[ring["month"] >= 7]

    def escorted(part: pd.DataFrame) -> float:
        return _share(part.loc[part["channel"] != "mobile", "escort_id"] != "")

    def on_app(part: pd.DataFrame) -> float:
        return _share(part["channel"] == "mobile")

    assert escorted(late) < escorted(early) - 0.1
    assert on_app(late) > on_app(early) + 0.1
    shared = late[late["channel"] == "mobile"].groupby("device_id")["id_number"].nunique()
    assert shared.max() >= 3  # one phone, several recruits


def test_rings_spread_over_more_branches_and_spell_addresses_more_ways_later(rows):
    ring = _scheme(rows, "escort_ring")
    by_ring = ring.groupby("group_id").agg(month=("month", "min"), branches=("branch_id", "nunique"))
    assert (
        by_ring.loc[by_ring["month"] >= 7, "branches"].mean()
        > by_ring.loc[by_ring["month"] <= 6, "branches"].mean()
    )
    varied = ring["address"].map(lambda text: bool(VARIANT.search(text)))
    assert varied[ring["month"] >= 9].mean() > varied[ring["month"] <= 4].mean() + 0.15


def test_the_ordinary_population_looks_like_a_city(rows):
    legit = _scheme(rows, "legit")
    age = legit["at"].dt.year - legit["id_number"].str[6:10].astype(int)
    assert 30 <= age.median() <= 45
    assert 0.25 <= _share(~legit["id_number"].str.startswith("44")) <= 0.5
    assert legit["branch_id"].nunique() >= 30
    assert legit["branch_region"].str[:4].nunique() == 4  # 广州, 深圳, 佛山, 东莞
    personal = legit[legit["account_type"] == "personal"]
    assert _share(personal["address"].duplicated(keep=False)) > 0.05  # families, roommates
    assert 0.0 < _share(legit["photo_tampered"] == "true") < 0.01


# --- the joint-punishment list ------------------------------------------------------


@pytest.fixture(scope="module")
def listings(bank: GeneratedBank, rows: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Each listing with the earliest confirmation of an account of the listed person."""
    frame = _read(bank.watchlist)
    confirmed = labels.assign(confirmed=pd.to_datetime(labels["confirmed_at"]))
    first = confirmed.groupby("id_number")["confirmed"].min()
    frame["listed"] = pd.to_datetime(frame["listed_at"])
    frame["first_confirmed"] = frame["id_number"].map(first)
    return frame


def _reapplications(rows: pd.DataFrame, listings: pd.DataFrame) -> pd.DataFrame:
    joined = rows.merge(listings[["id_number", "listed"]], on="id_number")
    return joined.loc[joined["at"] >= joined["listed"]]


def test_the_watchlist_has_the_contract_columns_and_lists_each_person_once(bank, listings):
    assert bank.watchlist.read_text(encoding="utf-8").split("\n", 1)[0] == ",".join(WATCHLIST.names)
    assert bank.n_listed == len(listings) > 100
    assert listings["id_number"].is_unique
    assert (listings["source"] == "pboc_joint_punishment").all()
    assert (listings["expires_at"] == "").all()  # the contract's default: 5 years
    assert listings["listed"].is_monotonic_increasing


def test_people_are_listed_after_a_confirmation_of_their_account(listings, labels):
    assert listings["first_confirmed"].notna().all()
    # listed 7-60 days after the confirmation that listed them, never before the first one
    assert (listings["listed"] >= listings["first_confirmed"] + 7 * DAY).all()
    share = listings["id_number"].nunique() / labels["id_number"].nunique()
    assert 0.45 <= share <= 0.75


def test_some_listed_people_apply_again_at_another_branch_and_are_never_confirmed(
    bank, rows, labels, listings
):
    again = _reapplications(rows, listings)
    assert bank.n_reapplications == len(again) >= 10
    assert again["mule"].all()
    assert set(again["scheme"]) <= {"escort_ring", "solo_seller"}
    assert (again["channel"] == "counter").all()
    assert not again["application_id"].isin(labels["application_id"]).any()
    earlier = rows.merge(again[["id_number", "listed"]].drop_duplicates(), on="id_number")
    before = earlier.loc[earlier["at"] < earlier["listed"]]
    used = before.groupby("id_number")["branch_id"].agg(set)
    pairs = zip(again["id_number"], again["branch_id"], strict=True)
    assert all(branch not in used[person] for person, branch in pairs)
    # inside the 5-year listing: the rule, not the model, must refuse them
    assert (again["at"] < again["listed"] + pd.DateOffset(years=5)).all()


def test_duanka_generate_writes_the_watchlist_beside_the_contract_files(tmp_path):
    from typer.testing import CliRunner

    from duanka.cli.app import app

    result = CliRunner().invoke(
        app, ["generate", "--out", str(tmp_path), "--applications", "20000", "--months", "12", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    written = _read(tmp_path / "watchlist.csv")
    assert list(written.columns) == list(WATCHLIST.names) and len(written) > 0
    assert f"{len(written):,} joint-punishment listings" in result.output
    assert {p.name for p in tmp_path.iterdir()} == {
        "applications.csv",
        "labels.csv",
        "watchlist.csv",
        "truth.csv",
    }
