"""The service under hostile input: whatever arrives, the answer is a 4xx naming the field, or a
decision that conforms to the published schema; never a 5xx.

Property tests (hypothesis, derandomised so that a run is reproducible) throw arbitrary JSON
values at every field of every write endpoint; hand-written cases cover what a generator rarely
finds: an empty body, 10 MB bodies with and without a length, invalid UTF-8, a wrong ID check
character, future and out-of-range dates, a batch of 1,001.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sqlite3

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duanka.data.contract import APPLICATIONS
from duanka.serving.keys import KeyFile
from duanka.serving.schemas import (
    MAX_BATCH,
    MAX_TEXT_CHARS,
    ApplicationIn,
    BatchOut,
    ErrorOut,
    LabelIn,
    LabelsOut,
    ListingIn,
    ScoreOut,
)
from tests.conftest import service_client

FIELDS = list(ApplicationIn.model_fields)
FUZZ = settings(
    max_examples=100,
    derandomize=True,
    database=None,  # derandomised: nothing to replay, and no .hypothesis/ left behind
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_ids = itertools.count()
_AGE_RULE = re.compile(r"birth date is after the application|applicant aged \d+, outside")

# Any JSON value, with strings on the contract's edges (empty, flags, impossible and far dates).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "true", "0", "12", "2025-02-30", "9999-12-31T00:00:00", "1900-01-01"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def api(served_bank, tmp_path_factory):
    with service_client(served_bank, tmp_path_factory.mktemp("fuzz") / "serving") as service:
        yield service


@pytest.fixture(scope="module")
def held_id(served_bank) -> str:
    """An application the service holds: a confirmation of it is taken when its fields are."""
    return served_bank.store.applications(["application_id"])["application_id"][0].as_py()


@pytest.fixture(scope="module")
def rows(served_bank) -> list[dict]:
    """A few never-seen applications to mutate (the fuzzed tests' failure reports print them)."""
    return served_bank.holdout[:8]


def _valid(rows: list[dict], n: int = 0, **changes: object) -> dict:
    """A holdout application under a new id, so that no two examples collide (409)."""
    return {**rows[n], "application_id": f"FUZZ{next(_ids):06d}", **changes}


def _decisions(paths) -> int:
    with sqlite3.connect(paths.decisions) as con:
        return con.execute("SELECT count(*) FROM decisions").fetchone()[0]


def _conforms(response, ok: type) -> dict:
    """The body of any answer the service may give, checked against its schema."""
    assert response.status_code < 500, response.text
    body = response.json()
    if response.status_code == 200:
        ok.model_validate(body)
    else:
        assert response.status_code in (400, 409, 413, 422), response.text
        ErrorOut.model_validate(body)
    return body


# --- property tests ------------------------------------------------------------------------


@FUZZ
@given(field=st.sampled_from(FIELDS), value=json_values)
def test_any_value_in_any_field_is_scored_or_refused_naming_that_field(api, rows, field, value):
    client, auth, _ = api
    row = _valid(rows, **{field: value})
    body = _conforms(client.post("/v1/score", json=row, headers=auth), ScoreOut)
    if "errors" in body:
        # the only defect is the one we put in; the message says which field, except that a date
        # making the applicant's age impossible is the age rule's, which the contract puts on id_number
        named = {e["field"] for e in body["errors"]}
        if field == "applied_at" and named == {"id_number"}:
            assert all(_AGE_RULE.search(e["reason"]) for e in body["errors"]), body
        else:
            assert named == {field}, body
        assert all(e["item"] == 0 and e["reason"] for e in body["errors"])


@FUZZ
@given(body=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values, max_size=8) | json_values)
def test_an_arbitrary_body_never_gets_a_5xx(api, body):
    client, auth, _ = api
    _conforms(client.post("/v1/score", json=body, headers=auth), ScoreOut)


@FUZZ
@given(items=st.lists(st.tuples(st.sampled_from(FIELDS), json_values), min_size=1, max_size=3))
def test_a_batch_with_defects_names_each_item_and_field_and_records_nothing(api, rows, items):
    client, auth, paths = api
    rows = [_valid(rows, i, **{field: value}) for i, (field, value) in enumerate(items)]
    before = _decisions(paths)
    body = _conforms(client.post("/v1/score/batch", json={"applications": rows}, headers=auth), BatchOut)
    if "errors" in body:
        # a type error is the schema's and names the path; a contract breach names the column
        allowed = {
            (i, name) for i, (field, _) in enumerate(items) for name in (field, f"applications.{field}")
        }
        allowed |= {(i, "id_number") for i, (field, _) in enumerate(items) if field == "applied_at"}
        assert {(e["item"], e["field"]) for e in body["errors"]} <= allowed, body
        assert _decisions(paths) == before  # all or nothing
    else:
        assert _decisions(paths) == before + len(rows)


@FUZZ
@given(field=st.sampled_from(["application_id", "confirmed_at", "source"]), value=json_values)
def test_any_label_value_is_taken_or_refused_naming_that_field(api, held_id, field, value):
    client, auth, _ = api
    label = {"application_id": held_id, "confirmed_at": "2025-04-01", "source": "police_notice", field: value}
    body = _conforms(client.post("/v1/labels", json={"labels": [label]}, headers=auth), LabelsOut)
    if "errors" in body:
        assert {e["field"] for e in body["errors"]} <= {field, f"labels.{field}"}, body
        assert body["errors"], body


# --- hand-written cases --------------------------------------------------------------------


def _post(client, auth, path: str, content: bytes, **headers: str):
    return client.post(path, content=content, headers={**auth, "Content-Type": "application/json", **headers})


@pytest.mark.parametrize("path", ["/v1/score", "/v1/score/batch", "/v1/labels"])
def test_an_empty_body_is_refused_as_not_matching_the_schema(api, path):
    client, auth, _ = api
    response = _post(client, auth, path, b"")
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("phone_tenure_days", 12.5), ("u_shield", [True]), ("application_id", 42), ("applied_at", {"d": 1})],
)
def test_a_value_of_a_type_no_contract_file_holds_is_refused_by_field(api, rows, field, value):
    client, auth, _ = api
    response = client.post("/v1/score", json=_valid(rows, **{field: value}), headers=auth)
    assert response.status_code == 422
    assert [(e["item"], e["field"]) for e in response.json()["errors"]] == [(0, field)]


def test_a_10_mb_body_is_refused_before_it_is_parsed(api):
    client, auth, paths = api
    before = _decisions(paths)
    response = _post(client, auth, "/v1/score/batch", b'{"applications": [' + b" " * (10 * 1024 * 1024))
    assert response.status_code == 413 and "bytes" in response.json()["detail"]
    assert _decisions(paths) == before


def test_a_10_mb_body_sent_without_a_length_is_refused_too(api):
    client, auth, _ = api

    def chunks():  # no Content-Length: the limit must count what arrives
        for _ in range(10):
            yield b" " * (1024 * 1024)

    response = client.post(
        "/v1/score/batch", content=chunks(), headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_non_finite_numbers_are_refused_by_field(api, rows, literal):
    # Python's JSON reader takes these literals although JSON has none; they must not reach a 5xx
    client, auth, _ = api
    text = json.dumps(_valid(rows, phone_tenure_days=123456789)).encode()
    response = _post(client, auth, "/v1/score", text.replace(b"123456789", literal))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["phone_tenure_days"]


def test_invalid_utf8_is_refused_as_not_json(api, rows):
    client, auth, _ = api
    text = json.dumps(_valid(rows), ensure_ascii=False).encode()
    response = _post(
        client, auth, "/v1/score", text.replace(b'"counter"', b'"\xff\xfe"').replace(b"B", b"\xc3")
    )
    assert response.status_code == 400
    ErrorOut.model_validate(response.json())


def test_an_id_number_with_a_wrong_check_character_is_refused_without_echoing_it(api, rows):
    client, auth, paths = api
    good = rows[1]["id_number"]
    wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
    before = _decisions(paths)
    response = client.post("/v1/score", json=_valid(rows, 1, id_number=wrong), headers=auth)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["id_number"]
    assert wrong not in response.text and good not in response.text
    assert _decisions(paths) == before


def test_a_date_after_the_server_clock_is_refused_naming_applied_at(api, rows):
    # an opening is scored as it happens: a date past the clock (and its tolerance) is a wrong clock
    client, auth, paths = api
    before = _decisions(paths)
    response = client.post(
        "/v1/score", json=_valid(rows, 2, applied_at="2031-01-01T09:00:00+08:00"), headers=auth
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "applied_at" and "after the server's clock" in error["reason"]
    assert _decisions(paths) == before


@pytest.mark.parametrize("when", ["2200-01-01T00:00:00+08:00", "9999-12-31"])
def test_a_date_that_makes_the_applicant_impossibly_old_is_refused_by_the_age_rule(api, rows, when):
    client, auth, _ = api
    response = client.post("/v1/score", json=_valid(rows, 3, applied_at=when), headers=auth)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "id_number" and re.match(r"applicant aged \d+, outside 16-100", error["reason"])


@pytest.mark.parametrize("when", ["2025-02-30", "tomorrow", "2025-13-01T00:00:00"])
def test_a_date_that_is_not_a_date_is_refused_naming_applied_at(api, rows, when):
    client, auth, _ = api
    response = client.post("/v1/score", json=_valid(rows, 3, applied_at=when), headers=auth)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["applied_at"]


def test_a_batch_of_1001_is_refused_naming_applications_and_records_nothing(api, rows):
    client, auth, paths = api
    rows = [_valid(rows, 4) for _ in range(MAX_BATCH + 1)]
    before = _decisions(paths)
    response = client.post("/v1/score/batch", json={"applications": rows}, headers=auth)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["applications"]
    assert _decisions(paths) == before


def test_every_contract_column_is_a_field_of_the_api(api):
    # the property tests above fuzz ApplicationIn's fields: they must be the whole contract
    assert set(FIELDS) == set(APPLICATIONS.names)


# --- text no field may hold ---------------------------------------------------------------

# DUANKA_FUZZ_EXAMPLES=1300 sends 5,200 requests (docs/serving.md); CI sends 400.
HOSTILE_FUZZ = settings(FUZZ, max_examples=int(os.environ.get("DUANKA_FUZZ_EXAMPLES", "100")))
_UNENCODABLE = ["\ud800", "\udfff", "A\udc80B", "\udbff\udfff"[::-1]]  # lone or reversed halves
_HIDDEN = ["\x00", "id\x00", "\u202eevil", "a\u2066b", "x\u200fy", "line\nbreak", "\x7f"]
hostile_text = st.tuples(
    st.text(max_size=8),
    st.sampled_from(_UNENCODABLE + _HIDDEN) | st.integers(MAX_TEXT_CHARS * 2 + 1, 40_000).map("地".__mul__),
    st.text(max_size=8),
).map("".join)


def _send(client, path: str, body: object, headers: dict[str, str]):
    """JSON as a bank's client writes it (ASCII, ``\\ud800`` escaped): httpx itself cannot encode a
    lone surrogate, which is exactly what arrives."""
    return client.post(
        path,
        content=json.dumps(body).encode("ascii"),
        headers={**headers, "Content-Type": "application/json"},
    )


def _text_fields(model: type) -> list[str]:
    return [name for name, info in model.model_fields.items() if "str" in str(info.annotation)]


@pytest.fixture(scope="module")
def admin(api):
    _, _, paths = api
    return {"Authorization": f"Bearer {KeyFile(paths.keys).create(admin=True)[1]}"}


def _refused_naming(response, field: str) -> None:
    assert response.status_code == 422, response.text  # never a 5xx, never taken
    body = ErrorOut.model_validate(response.json())
    assert {e.field.split(".")[-1] for e in body.errors} == {field}, response.text


@HOSTILE_FUZZ
@given(field=st.sampled_from(_text_fields(ApplicationIn)), value=hostile_text)
def test_text_no_field_may_hold_is_refused_by_score_naming_the_field(api, rows, field, value):
    client, auth, _ = api
    _refused_naming(_send(client, "/v1/score", _valid(rows, **{field: value}), headers=auth), field)


@HOSTILE_FUZZ
@given(field=st.sampled_from(_text_fields(ApplicationIn)), value=hostile_text, at=st.integers(0, 2))
def test_text_no_field_may_hold_is_refused_by_batch_naming_the_field(api, rows, field, value, at):
    client, auth, paths = api
    before = _decisions(paths)
    batch = [_valid(rows, i, **({field: value} if i == at else {})) for i in range(3)]
    _refused_naming(_send(client, "/v1/score/batch", {"applications": batch}, headers=auth), field)
    assert _decisions(paths) == before


@HOSTILE_FUZZ
@given(field=st.sampled_from(_text_fields(LabelIn)), value=hostile_text)
def test_text_no_field_may_hold_is_refused_by_labels_naming_the_field(api, held_id, field, value):
    client, auth, _ = api
    label = {"application_id": held_id, "confirmed_at": "2025-04-01", "source": "police_notice", field: value}
    _refused_naming(_send(client, "/v1/labels", {"labels": [label]}, headers=auth), field)


@HOSTILE_FUZZ
@given(field=st.sampled_from(_text_fields(ListingIn)), value=hostile_text)
def test_text_no_field_may_hold_is_refused_by_watchlist_naming_the_field(api, admin, field, value):
    client, _, _ = api
    listing = {"id_number": "11010519491231002X", "listed_at": "2025-05-20", "source": "bank_internal"}
    response = _send(client, "/v1/watchlist", {"listings": [{**listing, field: value}]}, headers=admin)
    _refused_naming(response, field)


@pytest.mark.parametrize("name", ["\ud800", "a\x00b", "n" * 65])
def test_a_field_name_no_contract_could_have_is_refused_not_a_5xx(api, rows, name):
    client, auth, _ = api
    response = _send(client, "/v1/score", {**_valid(rows), name: "1"}, headers=auth)
    assert response.status_code == 422, response.text


def test_a_3_9_mb_application_id_is_refused_and_nothing_stored(api, rows):
    client, auth, paths = api
    before = _decisions(paths)
    response = _send(client, "/v1/score", _valid(rows, application_id="A" * 3_900_000), headers=auth)
    _refused_naming(response, "application_id")
    assert "more than the 256" in response.text and "AAAA" not in response.text
    assert _decisions(paths) == before


def test_an_unexpected_error_is_a_json_500_without_a_traceback(api, rows, monkeypatch):
    client, auth, _ = api
    from duanka.serving import scorer

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail 11010519491231002X")

    monkeypatch.setattr(scorer.Scorer, "score", broken)
    # as a real server answers: the test client would otherwise re-raise the error itself
    served = TestClient(client.app, raise_server_exceptions=False)
    response = _send(served, "/v1/score", _valid(rows), headers=auth)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: no score was given", "errors": []}
    assert "Traceback" not in response.text and "secret" not in response.text
