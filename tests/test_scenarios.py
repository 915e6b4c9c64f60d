"""Generator scenarios: the default world stays exactly as it was, and each
adaptation hides the tell it claims to hide (escorts, one number block, one
hotel, a few shared phones, one insider staff id) while the schemes keep their
names in truth.csv."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from duanka.cli.app import app
from duanka.data.address import address_kinds, address_provinces, building_keys
from duanka.data.contract import APPLICATIONS
from duanka.data.reader import read_raw
from duanka.data.synthetic import SCENARIOS, Scenario, ScenarioName, generate_bank, scenario
from duanka.data.validate import validate

FILES = ("applications.csv", "labels.csv", "truth.csv", "watchlist.csv")
# sha256 of the default world for 20,000 applications, 6 months, seed 3, as written
# before scenarios existed. A deliberate change to the default world updates them.
PINNED = {
    "applications.csv": "6254cdda52b0db6f3139c7401c3b2bab76e1ba08ef042a472f6630beaf86e455",
    "labels.csv": "8dba44df4b4899a8828381c72a13c8a993a11d4ae4da4e060d03d25949788c4d",
    "truth.csv": "53b55fe60bba3d4c524e31419e726c0280964b4e7b38efac9b7ccb10a9147718",
    "watchlist.csv": "d72768fa20d541b37dbfe44ff3367564b1cb4966368b4fcb4b21f5adbb90b319",
}
SMALL = (20_000, 6)
# A 20,000-application bank's rings make only a score of app openings, too few to
# count their phones; at 50,000 over a year they make over a hundred.
LARGER = (50_000, 12)
SEED = 3


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory):
    """Applications joined with their truth, per (scenario, size), generated once."""
    root = tmp_path_factory.mktemp("scenarios")

    @cache
    def generated(name: str, size: tuple[int, int] = SMALL) -> pd.DataFrame:
        applications, months = size
        out = root / f"{name}-{applications}-{months}"
        bank = generate_bank(out, months=months, applications=applications, seed=SEED, scenario=name)
        assert bank.scenario is SCENARIOS[ScenarioName(name)]
        return _read(bank.applications).merge(_read(bank.truth), on="application_id", validate="1:1")

    return generated


def _scheme(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["scheme"] == name]


def _escorted(frame: pd.DataFrame, scheme: str) -> float:
    return float((_scheme(frame, scheme)["escort_id"] != "").mean())


def _plain(output: str) -> str:
    """CLI output without rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def _hashes(folder: Path) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}


# --- the lookup -------------------------------------------------------------------


def test_the_default_scenario_holds_todays_world():
    default = scenario("default")
    assert default == Scenario("default")
    assert (default.ring_blocks, default.insider_posts, default.insider_borrowed) == ((1, 1), (1, 1), 0.0)
    assert default.moved() == {}


def test_every_name_has_a_scenario_and_adapted_moves_what_the_others_move():
    assert list(SCENARIOS) == list(ScenarioName)
    assert all(scenario(name).name == name for name in ScenarioName)
    parts = {}
    for name in ("escorts_hidden", "spread_out", "insiders_move", "sent_alone"):
        moved = scenario(name).moved()
        assert moved and not set(moved) & set(parts)
        parts |= moved
    assert scenario("adapted").moved() == parts
    custom = Scenario("mine", ring_devices=(9, 9))
    assert scenario(custom) is custom


def test_an_unknown_scenario_name_is_refused():
    with pytest.raises(ValueError, match="unknown scenario 'sneaky'; known: default, escorts_hidden"):
        scenario("sneaky")
    with pytest.raises(ValueError, match="unknown scenario"):
        generate_bank(Path("unused"), applications=1_000, months=1, scenario="sneaky")


# --- the command line ---------------------------------------------------------------


def test_the_default_world_is_unchanged_and_the_same_with_or_without_the_option(tmp_path):
    def generate(folder: str, *extra: str) -> Path:
        out = tmp_path / folder
        applications, months = SMALL
        arguments = ["--applications", str(applications), "--months", str(months), "--seed", str(SEED)]
        result = CliRunner().invoke(app, ["generate", "--out", str(out), *arguments, *extra])
        assert result.exit_code == 0, result.output
        assert "scenario default (today's world)" in _plain(result.output)
        return out

    implicit, explicit = generate("implicit"), generate("explicit", "--scenario", "default")
    assert _hashes(implicit) == _hashes(explicit) == PINNED


def test_the_command_line_refuses_an_unknown_scenario_before_writing_anything(tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["generate", "--out", str(out), "--scenario", "sneaky"])
    assert result.exit_code == 2
    message = _plain(result.output)
    assert "Invalid value for '--scenario'" in message
    assert "'sneaky' is not one of" in message
    assert all(f"'{name}'" in message for name in ScenarioName)
    assert not out.exists()


def test_the_command_line_says_which_scenario_it_wrote(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "--out",
            str(tmp_path),
            "--applications",
            "5000",
            "--months",
            "3",
            "--scenario",
            "adapted",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "scenario adapted (escort_recorded=(0.15, 0.02)" in _plain(result.output)


# --- what each scenario changes -----------------------------------------------------


def test_every_scenario_keeps_the_scheme_names_and_writes_valid_files(rows, tmp_path):
    default = set(rows("default")["scheme"])
    assert {"escort_ring", "shell_company", "insider", "solo_seller"} <= default
    for name in ScenarioName:
        assert set(rows(name)["scheme"]) == default, name
    bank = generate_bank(tmp_path, months=3, applications=8_000, seed=SEED, scenario="adapted")
    outcome = validate(read_raw(bank.applications, APPLICATIONS), APPLICATIONS)
    assert outcome.rejections.empty, outcome.rejections.head().to_string()
    frame = _read(bank.applications)
    staffed = frame["staff_id"] != ""
    assert (frame["staff_id"].str[1:8] == frame["branch_id"].str[1:8])[staffed].all()


@pytest.mark.parametrize("name", ["escorts_hidden", "adapted"])
def test_hidden_escorts_are_rarely_recorded(rows, name):
    default, hidden = rows("default"), rows(name)
    assert _escorted(default, "escort_ring") > 0.3
    assert _escorted(hidden, "escort_ring") < min(0.4 * _escorted(default, "escort_ring"), 0.2)
    assert _escorted(hidden, "shell_company") < min(_escorted(default, "shell_company"), 0.1)


def test_hiding_escorts_changes_nothing_else(rows):
    columns = [c for c in APPLICATIONS.names if c != "escort_id"]
    default, hidden = rows("default"), rows("escorts_hidden")
    pd.testing.assert_frame_equal(default[columns], hidden[columns])


def _per_ring(frame: pd.DataFrame) -> pd.DataFrame:
    """Per ring: 7-digit number blocks per recruit, lodging buildings, branches."""
    ring = _scheme(frame, "escort_ring")
    lodging = ring[address_kinds(ring["address"]) == "lodging"]
    groups = ring.groupby("group_id")
    return pd.DataFrame(
        {
            "blocks_per_recruit": groups["phone"].agg(lambda p: p.str[:7].nunique())
            / groups["id_number"].nunique(),
            "lodgings": building_keys(lodging["address"]).groupby(lodging["group_id"]).nunique(),
            "branches": groups["branch_id"].nunique(),
        }
    )


def _phones(frame: pd.DataFrame) -> tuple[float, float]:
    """Rings' app openings: distinct phones per ring, and recruits per phone."""
    app = _scheme(frame, "escort_ring").query("channel == 'mobile'")
    return (
        float(app.groupby("group_id")["device_id"].nunique().mean()),
        float(app.groupby("device_id")["id_number"].nunique().mean()),
    )


@pytest.mark.parametrize("name", ["spread_out", "adapted"])
def test_spread_out_rings_use_more_number_blocks_lodgings_and_branches(rows, name):
    default, spread = _per_ring(rows("default")).mean(), _per_ring(rows(name)).mean()
    assert default["blocks_per_recruit"] < 0.5 < spread["blocks_per_recruit"]
    assert spread["lodgings"] > default["lodgings"] + 1
    assert spread["branches"] > default["branches"] + 1


def test_spread_out_rings_share_their_phones_less(rows):
    default, spread = _phones(rows("default", LARGER)), _phones(rows("spread_out", LARGER))
    assert spread[0] > default[0] + 0.5
    assert spread[1] < default[1]


def test_spread_out_rings_put_fewer_recruits_on_one_block(rows):
    def on_a_shared_block(frame: pd.DataFrame) -> float:
        ring = _scheme(frame, "escort_ring")
        block = ring["group_id"] + ring["phone"].str[:7]
        return float((block.map(block.value_counts()) >= 3).mean())

    assert on_a_shared_block(rows("spread_out")) < on_a_shared_block(rows("default")) - 0.2


@pytest.mark.parametrize("name", ["insiders_move", "adapted"])
def test_moving_insiders_open_under_several_branches_and_staff_ids(rows, name):
    def spread(frame: pd.DataFrame) -> pd.DataFrame:
        groups = _scheme(frame, "insider").groupby("group_id")
        top = groups["staff_id"].agg(lambda s: s.value_counts(normalize=True).iloc[0])
        return pd.DataFrame(
            {"branches": groups["branch_id"].nunique(), "staff": groups["staff_id"].nunique(), "top": top}
        )

    default, moved = spread(rows("default")), spread(rows(name))
    assert (default["branches"] == 1).all() and (default["staff"] == 1).all()
    assert (moved["branches"] >= 3).all()
    assert (moved["staff"] > moved["branches"]).all()  # a colleague's id at some desks
    assert (moved["top"] < 0.6).all()
    insider = _scheme(rows(name), "insider")
    assert (insider["staff_id"].str[1:8] == insider["branch_id"].str[1:8]).all()


def _recruits_alone(frame: pd.DataFrame) -> pd.DataFrame:
    """Ring openings that show nothing of the ring: no escort recorded, at the counter, with a
    countryside address back home."""
    ring = _scheme(frame, "escort_ring")
    village = address_kinds(ring["address"]) == "village"
    return ring[(ring["escort_id"] == "") & (ring["device_id"] == "") & village]


def test_recruits_sent_alone_come_with_their_own_settled_number_and_their_home_address(rows):
    default, alone = rows("default"), rows("sent_alone")
    ring, alone_ring = _scheme(default, "escort_ring"), _scheme(alone, "escort_ring")
    share = len(_recruits_alone(alone)) / len(alone_ring)
    assert share > 0.3 > len(_recruits_alone(default)) / len(ring)
    sent = _recruits_alone(alone)
    # their own numbers, not the ring's blocks: few share a 7-digit block with another recruit
    blocks = alone_ring["phone"].str[:7]
    assert blocks[sent.index].map(blocks.value_counts()).eq(1).mean() > 0.8
    # the household-register address is in the province on the ID card
    assert (address_provinces(sent["address"]) == sent["id_number"].str[:2]).mean() > 0.95
    # older: born earlier (the ID number's digits 7-10 are the birth year)
    assert (
        pd.to_numeric(sent["id_number"].str[6:10]).median()
        < pd.to_numeric(ring["id_number"].str[6:10]).median()
    )


def test_rings_sent_alone_recruit_fellow_villagers_from_a_few_counties(rows):
    def counties_per_ring(frame: pd.DataFrame) -> pd.Series:
        ring = _scheme(frame, "escort_ring")
        return ring.groupby("group_id")["id_number"].agg(lambda ids: ids.str[:6].nunique())

    assert counties_per_ring(rows("sent_alone")).max() <= 3
    assert counties_per_ring(rows("default")).median() > 3
