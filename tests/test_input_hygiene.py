"""What the service and ingestion take in (issue #26): identifiers in one spelling, confirmations
dated when they can be true, no field nobody declared, and a documented, self-contained API page."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from duanka.data.contract import APPLICATIONS
from duanka.data.identifier_text import HIDDEN_CHARACTER_REASON, IDENTIFIER_KINDS
from duanka.data.ingest import CONFIRMED_BEFORE_APPLICATION
from duanka.data.reader import RawTable, read_raw
from duanka.data.record import validate_record
from duanka.data.validate import validate
from duanka.serving.keys import KeyFile
from duanka.serving.schemas import (
    UNKNOWN_FIELD_REASON,
    UNPLAIN_FIELD,
    ApplicationIn,
    BatchIn,
    LabelIn,
    ListingIn,
)
from tests.conftest import service_client

FIXTURES = Path(__file__).parent / "fixtures" / "contract"
IDENTIFIERS = [c.name for c in APPLICATIONS.columns if c.kind in IDENTIFIER_KINDS]
# Characters that show nothing, or nothing but a space, inside an identifier.
HIDDEN = {
    "zero width space": "\u200b",
    "byte order mark": "\ufeff",
    "word joiner": "\u2060",
    "soft hyphen": "\u00ad",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "hangul filler": "\u3164",
    "variation selector": "\ufe0f",
    "tab": "\t",
    "space": " ",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "unassigned": "\U000e0fff",
}
FULL_WIDTH = str.maketrans(
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "０１２３４５６７８９ＡＢＣＤＥＦＧＨＩＪＫＬＭＮＯＰＱＲＳＴＵＶＷＸＹＺ",
)


@pytest.fixture(scope="module")
def application() -> dict[str, str | None]:
    """A valid corporate application of the contract's samples, every identifier field filled."""
    rows = read_raw(FIXTURES / "applications.csv", APPLICATIONS).frame
    rows = rows.loc[:, list(APPLICATIONS.names)].to_dict("records")
    for row in rows:
        if validate_record(row)[1] == [] and row["account_type"] == "corporate":
            return {
                **row,
                "staff_id": "S0001",
                "device_id": "D0001",
                "escort_id": "E0001",
                "intermediary_id": "I1",
            }
    raise AssertionError("the contract samples hold no valid corporate application")


def _file_verdict(*records: dict[str, str | None]) -> tuple[pd.DataFrame, list[tuple[str, str]], int]:
    """The column path (a file): valid rows, rejection lines, exact repeats dropped."""
    frame = pd.DataFrame({n: [r[n] for r in records] for n in APPLICATIONS.names}, dtype=object)
    frame["row"] = range(1, len(records) + 1)
    checked = validate(RawTable(frame=frame, extra_columns=(), source="t"), APPLICATIONS)
    lines = list(zip(checked.rejections["column"], checked.rejections["reason"], strict=True))
    return checked.valid, lines, checked.duplicates_dropped


# --- identifiers: one spelling, nothing hidden (file and request alike) ----------------------


@pytest.mark.parametrize("character", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize("field", IDENTIFIERS)
def test_a_hidden_character_inside_any_identifier_is_refused_by_file_and_request(
    application, field, character
):
    value = application[field]
    spoilt = {**application, field: value[:1] + character + value[1:]}  # inside: ends are trimmed
    typed, defects = validate_record(spoilt)
    _, lines, _ = _file_verdict(spoilt)
    assert typed is None
    assert defects == lines == [(field, HIDDEN_CHARACTER_REASON)]  # the rule, never the value


@pytest.mark.parametrize("field", IDENTIFIERS)
def test_a_full_width_identifier_is_the_plain_one(application, field):
    wide = {**application, field: application[field].translate(FULL_WIDTH)}
    assert wide[field] != application[field]
    plain_typed, _ = validate_record(application)
    wide_typed, defects = validate_record(wide)
    assert defects == []
    assert wide_typed == plain_typed
    valid, lines, _ = _file_verdict(wide)
    assert lines == [] and valid[field].tolist() == [plain_typed[field]]


def test_one_application_id_in_two_spellings_is_one_application_in_a_file(application):
    wide = {**application, "application_id": application["application_id"].translate(FULL_WIDTH)}
    valid, lines, dropped = _file_verdict(application, wide)
    assert lines == [] and dropped == 1 and len(valid) == 1


# --- the service -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(served_bank, tmp_path_factory):
    with service_client(served_bank, tmp_path_factory.mktemp("hygiene") / "serving") as service:
        yield service


@pytest.fixture(scope="module")
def held(served_bank) -> tuple[str, pd.Timestamp]:
    """An application the service holds, and when it was made."""
    stored = served_bank.store.applications(["application_id", "applied_at"]).to_pandas()
    first = stored.iloc[0]
    return first["application_id"], first["applied_at"]


def _fresh(served_bank, n: int, **changes: object) -> dict:
    return {**served_bank.holdout[n], **changes}


def test_the_service_refuses_an_id_with_a_zero_width_space_naming_the_field(api, served_bank):
    client, auth, _ = api
    row = _fresh(served_bank, 0)
    response = client.post(
        "/v1/score", json={**row, "application_id": row["application_id"] + "\u200b"}, headers=auth
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"item": 0, "field": "application_id", "reason": HIDDEN_CHARACTER_REASON}
    ]
    assert row["application_id"] not in response.text


def test_a_full_width_id_is_the_application_already_scored(api, served_bank):
    client, auth, _ = api
    row = _fresh(served_bank, 1)
    first = client.post("/v1/score", json=row, headers=auth)
    assert first.status_code == 200, first.text
    wide = {**row, "application_id": row["application_id"].translate(FULL_WIDTH)}
    again = client.post("/v1/score", json=wide, headers=auth)
    assert again.status_code == 200, again.text
    assert again.json()["replayed"] is True
    assert again.json()["application_id"] == row["application_id"]


def test_a_full_width_branch_id_is_the_branch_for_a_scoped_key(api, served_bank):
    client, _, paths = api
    row = _fresh(served_bank, 2)
    token = KeyFile(paths.keys).create((row["branch_id"],))[1]
    wide = {**row, "branch_id": row["branch_id"].translate(FULL_WIDTH)}
    response = client.post("/v1/score", json=wide, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("when", "reason"),
    [
        (lambda applied: (applied - timedelta(days=1)).isoformat(), CONFIRMED_BEFORE_APPLICATION),
        (lambda applied: "0001-01-01T00:00:00Z", None),
        (lambda applied: "2999-01-01T00:00:00+08:00", "after the server's clock"),
        (lambda applied: "9999-12-31T23:59:59+08:00", "after the server's clock"),
    ],
    ids=["a day before its application", "year 1", "year 2999", "year 9999"],
)
def test_a_confirmation_dated_when_it_cannot_be_true_is_refused_naming_confirmed_at(api, held, when, reason):
    client, auth, _ = api
    application_id, applied = held
    label = {"application_id": application_id, "confirmed_at": when(applied), "source": "police_notice"}
    response = client.post("/v1/labels", json={"labels": [label]}, headers=auth)
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["item"], error["field"]) == (0, "confirmed_at")
    assert reason is None or reason in error["reason"]


def test_a_confirmation_dated_after_its_application_is_taken(api, held):
    client, auth, _ = api
    application_id, applied = held
    label = {
        "application_id": application_id,
        "confirmed_at": (applied + timedelta(days=1)).isoformat(),
        "source": "police_notice",
    }
    response = client.post("/v1/labels", json={"labels": [label]}, headers=auth)
    assert response.status_code == 200, response.text


# --- fields nobody declared --------------------------------------------------------------


def test_an_unknown_field_is_refused_and_named_without_its_value(api, served_bank):
    client, auth, _ = api
    row = _fresh(served_bank, 3, note="x" * 2_000_000)
    response = client.post("/v1/score", json=row, headers=auth)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["errors"] == [{"item": 0, "field": "note", "reason": UNKNOWN_FIELD_REASON}]
    assert len(response.content) < 1_000


def test_a_typo_in_a_field_name_is_refused_rather_than_the_field_taken_as_missing(api, served_bank):
    client, auth, _ = api
    row = _fresh(served_bank, 4)
    row["aplication_id"] = row.pop("application_id")
    response = client.post("/v1/score", json=row, headers=auth)
    assert response.status_code == 422
    assert {"item": 0, "field": "aplication_id", "reason": UNKNOWN_FIELD_REASON} in response.json()["errors"]


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/score", lambda row, held, name: {**row, name: "1"}, (0, UNPLAIN_FIELD)),
        (
            "/v1/score/batch",
            lambda row, held, name: {"applications": [{**row, name: "1"}]},
            (0, "applications." + UNPLAIN_FIELD),
        ),
        (
            "/v1/score/batch",
            lambda row, held, name: {"applications": [row], name: "1"},
            (None, UNPLAIN_FIELD),
        ),
        (
            "/v1/labels",
            lambda row, held, name: {
                "labels": [
                    {"application_id": held, "confirmed_at": "2025-04-01", "source": "review", name: 1}
                ]
            },
            (0, "labels." + UNPLAIN_FIELD),
        ),
        (
            "/v1/labels",
            lambda row, held, name: {
                "labels": [{"application_id": held, "confirmed_at": "2025-04-01", "source": "review"}],
                name: 1,
            },
            (None, UNPLAIN_FIELD),
        ),
    ],
    ids=["score", "batch item", "batch", "label", "labels"],
)
def test_a_100k_character_field_name_is_refused_on_every_endpoint_without_echoing_it(
    api, served_bank, held, path, body, where
):
    client, auth, _ = api
    name = "n" * 100_000
    response = client.post(path, json=body(_fresh(served_bank, 5), held[0], name), headers=auth)
    assert response.status_code == 422, response.text[:300]
    assert "nnnnnnnnnn" not in response.text
    assert (*where, UNKNOWN_FIELD_REASON) in {
        (e["item"], e["field"], e["reason"]) for e in response.json()["errors"]
    }


def test_a_watchlist_listing_with_an_unknown_field_is_refused(api):
    client, _, paths = api
    admin = {"Authorization": f"Bearer {KeyFile(paths.keys).create(admin=True)[1]}"}
    listing = {"id_number": "11010519491231002X", "listed_at": "2025-05-20", "source": "bank_internal"}
    response = client.post(
        "/v1/watchlist", json={"listings": [{**listing, "note": "y" * 1_000}]}, headers=admin
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"item": 0, "field": "listings.note", "reason": UNKNOWN_FIELD_REASON}
    ]


def test_the_published_examples_are_still_valid_requests(api):
    client, _, _ = api
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for model in (ApplicationIn, BatchIn, LabelIn, ListingIn):
        assert schemas[model.__name__]["additionalProperties"] is False
        for example in model.model_json_schema()["examples"]:
            model.model_validate(example)


# --- what the service documents about itself ----------------------------------------------


def test_metrics_are_documented_as_the_plain_text_they_are(api):
    client, _, _ = api
    documented = client.get("/openapi.json").json()["paths"]["/metrics"]["get"]["responses"]["200"]
    answered = client.get("/metrics")
    assert list(documented["content"]) == ["text/plain"]
    assert answered.headers["content-type"].split(";")[0] == "text/plain"


def test_the_api_page_asks_no_outside_validator(api):
    client, _, _ = api
    page = client.get("/docs")
    assert page.status_code == 200
    assert '"validatorUrl": null' in page.text
    assert "validator.swagger.io" not in page.text
