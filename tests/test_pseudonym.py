"""Keyed pseudonyms: deterministic, separated by family and by secret, never leaking the key."""

from __future__ import annotations

import copy
import hashlib
import hmac
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from duanka.data.config import Settings
from duanka.data.pseudonym import FAMILIES, MissingPseudonymKey, Pseudonymiser

SECRET = b"k" * 32 + b"-test-secret"
OTHER_SECRET = b"o" * 40


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each test says where its key comes from; a developer's shell must not decide.
    monkeypatch.delenv("DUANKA_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("DUANKA_PSEUDONYM_KEY_FILE", raising=False)


@pytest.fixture
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser.from_secret(SECRET)


def test_token_follows_the_documented_derivation(pseudonymiser: Pseudonymiser) -> None:
    value = "宝安区新港路135号中信广场"
    family_key = hmac.new(SECRET, b"duanka/v1/family/address", hashlib.sha256).digest()
    expected = hmac.new(family_key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    assert pseudonymiser.token("address", value) == expected


def test_token_is_32_lowercase_hex_and_deterministic(pseudonymiser: Pseudonymiser) -> None:
    first = pseudonymiser.token("applicant", "11010519491231002X")
    again = Pseudonymiser.from_secret(SECRET).token("applicant", "11010519491231002X")
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first == again


def test_families_have_separate_keys(pseudonymiser: Pseudonymiser) -> None:
    tokens = {pseudonymiser.token(family, "13800138000") for family in FAMILIES}
    assert len(tokens) == len(FAMILIES)


def test_unknown_family_is_refused(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(ValueError, match=r"unknown pseudonym family 'email'.*applicant"):
        pseudonymiser.token("email", "a@example.com")


def test_different_secrets_give_different_tokens_and_key_ids() -> None:
    one, other = Pseudonymiser.from_secret(SECRET), Pseudonymiser.from_secret(OTHER_SECRET)
    assert one.token("phone", "13800138000") != other.token("phone", "13800138000")
    assert one.key_id != other.key_id


def test_key_id_is_derived_from_the_secret_not_equal_to_it() -> None:
    expected = hmac.new(SECRET, b"duanka/key-id", hashlib.sha256).hexdigest()[:12]
    assert Pseudonymiser.from_secret(SECRET).key_id == expected


def test_demo_key_is_labelled() -> None:
    demo = Pseudonymiser.demo()
    assert demo.is_demo
    assert demo.key_id.startswith("demo-")
    assert not Pseudonymiser.from_secret(SECRET).is_demo


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="31 bytes, needs at least 32"):
        Pseudonymiser.from_secret(b"s" * 31)


def test_repr_and_str_show_no_key_material(pseudonymiser: Pseudonymiser) -> None:
    shown = repr(pseudonymiser) + str(pseudonymiser)
    assert pseudonymiser.key_id in shown
    assert "_family_keys" not in shown
    assert SECRET.decode() not in shown
    for family_key in pseudonymiser._family_keys.values():
        assert family_key.hex() not in shown
        assert repr(family_key) not in shown


def test_refuses_to_be_pickled_but_copies_as_itself(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(pseudonymiser)
    assert copy.deepcopy(pseudonymiser) is pseudonymiser
    assert copy.copy(pseudonymiser) is pseudonymiser


def test_settings_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY", SECRET.decode())
    assert Pseudonymiser.from_settings(Settings()).key_id == Pseudonymiser.from_secret(SECRET).key_id


def test_settings_key_from_file_is_stripped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_bytes(b"  " + SECRET + b"\n")
    monkeypatch.setenv("DUANKA_PSEUDONYM_KEY_FILE", str(key_file))
    assert Pseudonymiser.from_settings(Settings()).key_id == Pseudonymiser.from_secret(SECRET).key_id


def test_environment_key_wins_over_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_bytes(OTHER_SECRET)
    settings = Settings(pseudonym_key=SECRET.decode(), pseudonym_key_file=key_file)
    assert Pseudonymiser.from_settings(settings).key_id == Pseudonymiser.from_secret(SECRET).key_id


def test_empty_environment_key_falls_through_to_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_bytes(OTHER_SECRET)
    settings = Settings(pseudonym_key="  ", pseudonym_key_file=key_file)
    expected = Pseudonymiser.from_secret(OTHER_SECRET).key_id
    assert Pseudonymiser.from_settings(settings).key_id == expected


def test_missing_key_says_how_to_provide_one() -> None:
    with pytest.raises(MissingPseudonymKey) as refused:
        Pseudonymiser.from_settings(Settings())
    assert "DUANKA_PSEUDONYM_KEY " in str(refused.value)
    assert "DUANKA_PSEUDONYM_KEY_FILE" in str(refused.value)


def test_unreadable_key_file_is_a_missing_key(tmp_path: Path) -> None:
    settings = Settings(pseudonym_key_file=tmp_path / "absent.key")
    with pytest.raises(MissingPseudonymKey, match=r"absent\.key.*DUANKA_PSEUDONYM_KEY_FILE"):
        Pseudonymiser.from_settings(settings)


def test_short_configured_key_is_refused_naming_its_source_not_its_value(tmp_path: Path) -> None:
    key_file = tmp_path / "short.key"
    key_file.write_bytes(b"tooshort-secret\n")
    with pytest.raises(ValueError, match=r"short\.key: pseudonym key has 15 bytes") as refused:
        Pseudonymiser.from_settings(Settings(pseudonym_key_file=key_file))
    assert "tooshort" not in str(refused.value)


def test_demo_fallback_only_when_asked_and_nothing_is_configured() -> None:
    assert Pseudonymiser.from_settings(Settings(), demo=True).is_demo
    configured = Settings(pseudonym_key=SECRET.decode())
    assert not Pseudonymiser.from_settings(configured, demo=True).is_demo


def test_tokens_match_token_per_element_and_keep_missing_as_none(
    pseudonymiser: Pseudonymiser,
) -> None:
    values = pd.Series(
        ["13800138000", None, "13900139000", "13800138000", np.nan, pd.NA],
        index=[10, 11, 12, 13, 14, 15],
        dtype=object,
        name="phone",
    )
    tokens = pseudonymiser.tokens("phone", values)
    assert tokens.index.equals(values.index)
    assert tokens.name == "phone"
    assert tokens.dtype == object
    assert tokens[10] == tokens[13] == pseudonymiser.token("phone", "13800138000")
    assert tokens[12] == pseudonymiser.token("phone", "13900139000")
    assert [tokens[i] for i in (11, 14, 15)] == [None, None, None]


def test_tokens_accept_pandas_string_dtype(pseudonymiser: Pseudonymiser) -> None:
    values = pd.Series(["a", None, "b"], dtype="string")
    assert pseudonymiser.tokens("device", values).tolist() == [
        pseudonymiser.token("device", "a"),
        None,
        pseudonymiser.token("device", "b"),
    ]


def test_tokens_of_empty_column_is_empty(pseudonymiser: Pseudonymiser) -> None:
    assert pseudonymiser.tokens("row", pd.Series([], dtype=object)).empty


def test_tokens_refuse_unknown_family(pseudonymiser: Pseudonymiser) -> None:
    with pytest.raises(ValueError, match="unknown pseudonym family"):
        pseudonymiser.tokens("name", pd.Series(["x"]))
