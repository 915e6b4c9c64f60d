"""Reason codes: the catalogue covers the model, and reasons are the grouped, positive,
ordered TreeSHAP contributions of a row, filled with its values. The report's shap plots
draw those same contributions, which are shap's TreeSHAP."""

from __future__ import annotations

import base64
import math
import re

import lightgbm as lgb
import numpy as np
import pytest
from matplotlib.text import Text

from duanka.features import values
from duanka.features.registry import BY_NAME, MODEL_FEATURES
from duanka.training import plots
from duanka.training.bands import Bands
from duanka.training.bundle import ScoringBundle
from duanka.training.calibration import PlattCalibrator
from duanka.training.explain import Reason, ReasonExplainer, format_value, load_catalogue, placeholders

ESCORT_30D = MODEL_FEATURES.index("escort_applicants_30d")
ESCORT_7D = MODEL_FEATURES.index("escort_applicants_7d")
ESCORT_BRANCHES = MODEL_FEATURES.index("escort_branches_30d")
TAMPERED = MODEL_FEATURES.index("photo_tampered")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bundle() -> ScoringBundle:
    """A small booster on MODEL_FEATURES where two escort windows and a photo flag carry the risk."""
    rng = np.random.default_rng(7)
    X = rng.poisson(2.0, size=(4_000, len(MODEL_FEATURES))).astype(float)
    X[:, TAMPERED] = rng.integers(0, 2, size=len(X))
    X[rng.random(len(X)) < 0.1, ESCORT_BRANCHES] = np.nan
    logit = 0.8 * X[:, ESCORT_30D] + 0.6 * X[:, ESCORT_7D] + 1.5 * X[:, TAMPERED] - 6.0
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "max_depth": 4,
        "verbose": -1,
        "seed": 1,
        "deterministic": True,
        "num_threads": 1,
    }
    booster = lgb.train(params, lgb.Dataset(X, y, feature_name=list(MODEL_FEATURES)), num_boost_round=40)
    return ScoringBundle(
        booster=booster,
        calibrator=PlattCalibrator(1.0, 0.0),
        bands=Bands(critical=0.9, high=0.7, medium=0.5),
        feature_names=list(MODEL_FEATURES),
        feature_set_version="test",
        booster_sha256="test",
    )


@pytest.fixture(scope="module")
def explainer(bundle: ScoringBundle) -> ReasonExplainer:
    return ReasonExplainer(bundle, top_k=3)


def _risky_row() -> np.ndarray:
    x = np.full((1, len(MODEL_FEATURES)), 2.0)
    x[0, ESCORT_30D], x[0, ESCORT_7D], x[0, TAMPERED] = 9.0, 6.0, 1.0
    return x


def test_every_model_feature_belongs_to_exactly_one_code() -> None:
    codes = load_catalogue()["codes"]
    owners = {name: [c for c, spec in codes.items() if name in spec["features"]] for name in MODEL_FEATURES}
    assert {name: len(found) for name, found in owners.items() if len(found) != 1} == {}
    listed = [f for spec in codes.values() for f in spec["features"]]
    assert sorted(listed) == sorted(MODEL_FEATURES)


def test_every_code_has_both_languages_reading_only_model_features() -> None:
    for code, spec in load_catalogue()["codes"].items():
        for language in ("zh", "en"):
            assert spec[language].strip(), f"{code} has no {language} text"
            assert set(placeholders(spec[language])) <= set(MODEL_FEATURES), code


def test_a_code_family_is_its_features_family() -> None:
    for code, spec in load_catalogue()["codes"].items():
        assert {str(BY_NAME[f].family) for f in spec["features"]} == {spec["family"]}, code


def test_contributions_and_base_value_add_up_to_the_margin(
    bundle: ScoringBundle, explainer: ReasonExplainer
) -> None:
    X = np.random.default_rng(3).poisson(2.0, size=(50, len(MODEL_FEATURES))).astype(float)
    contrib, reasons = explainer.explain(X)
    assert contrib.shape == (50, len(MODEL_FEATURES) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), bundle.margin(X), rtol=0, atol=1e-9)
    assert len(reasons) == 50


def test_two_features_of_one_code_take_one_slot(explainer: ReasonExplainer) -> None:
    contrib, (reasons,) = explainer.explain(_risky_row())
    # both escort windows raise the risk on their own: ungrouped, they would fill two slots
    assert contrib[0, ESCORT_30D] > 0 and contrib[0, ESCORT_7D] > 0
    codes = [r.code for r in reasons]
    assert codes.count("ESC_VELOCITY") == 1
    velocity = reasons[codes.index("ESC_VELOCITY")]
    members = [MODEL_FEATURES.index(f) for f in load_catalogue()["codes"]["ESC_VELOCITY"]["features"]]
    assert velocity.contribution == pytest.approx(contrib[0, members].sum(), abs=1e-12)
    lead = max(members, key=lambda m: contrib[0, m])
    assert velocity.feature == MODEL_FEATURES[lead]
    assert velocity.value == _risky_row()[0, lead]


def test_reasons_only_raise_risk_and_come_largest_first(explainer: ReasonExplainer) -> None:
    X = np.random.default_rng(5).poisson(2.0, size=(200, len(MODEL_FEATURES))).astype(float)
    _, reasons = explainer.explain(X)
    assert any(len(r) == 3 for r in reasons)
    for row in reasons:
        contributions = [r.contribution for r in row]
        assert all(c > 0 for c in contributions)
        assert contributions == sorted(contributions, reverse=True)
        assert len({r.code for r in row}) == len(row) <= 3


def test_a_row_that_only_lowers_risk_has_no_reasons(explainer: ReasonExplainer) -> None:
    X = np.random.default_rng(5).poisson(2.0, size=(1, len(MODEL_FEATURES))).astype(float)
    contrib = np.zeros((1, len(MODEL_FEATURES) + 1))
    contrib[0, :-1] = -0.1
    assert explainer.reasons_from_contributions(X, contrib) == [[]]


def test_reason_text_is_filled_with_the_rows_values(explainer: ReasonExplainer) -> None:
    _, (reasons,) = explainer.explain(_risky_row())
    by_code = {r.code: r for r in reasons}
    assert by_code["ESC_VELOCITY"].text_zh.startswith("该陪同人近30天陪同9名不同开户人（近7天6名）")
    assert by_code["ESC_VELOCITY"].text_en.startswith("The escort accompanied 9 different applicants")
    # a flag's reason states the fact, shown only when the flag is set
    assert by_code["PHOTO_TAMPERED"].text_zh == "证件或现场照片疑似篡改"
    assert by_code["PHOTO_TAMPERED"].text_en == "The ID, face or site photo shows editing"
    assert all("{" not in r.text_zh and "{" not in r.text_en for r in reasons)


def test_values_read_like_the_registry_descriptions() -> None:
    assert format_value("escort_applicants_30d", 12.0, "zh") == "12"
    assert format_value("escort_out_of_province_share_30d", 0.83333, "en") == "83%"
    assert format_value("staff_tampered_excess_30d", 0.15, "zh") == "15个百分点"
    assert format_value("staff_tampered_excess_30d", 0.15, "en") == "15 percentage points"
    assert format_value("branch_volume_vs_baseline", 2.456, "en") == "2.46"
    assert format_value("escort_applicants_30d", math.nan, "zh") == "无"
    assert format_value("escort_applicants_30d", math.nan, "en") == "none"
    assert format_value("channel", 1.0, "en") == BY_NAME["channel"].codes[1]
    labels = load_catalogue()["labels"]["address_kind"]
    assert format_value("address_kind", 0.0, "zh", labels) == labels["zh"][0]


def test_reasons_are_deterministic(explainer: ReasonExplainer) -> None:
    X = np.random.default_rng(11).poisson(2.0, size=(100, len(MODEL_FEATURES))).astype(float)
    first, again = explainer.explain(X), explainer.explain(X)
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1]
    assert all(isinstance(r, Reason) for row in first[1] for r in row)


def test_one_row_and_a_batch_explain_alike(explainer: ReasonExplainer) -> None:
    X = np.random.default_rng(13).poisson(2.0, size=(300, len(MODEL_FEATURES))).astype(float)
    _, batch = explainer.explain(X)
    for i in (0, 150, 299):
        (alone,) = explainer.explain(X[i])[1]
        # one row runs on one thread: sums may differ in the last bits, never the reasons
        assert [(r.code, r.feature, r.text_zh, r.text_en) for r in alone] == [
            (r.code, r.feature, r.text_zh, r.text_en) for r in batch[i]
        ]
        np.testing.assert_allclose(
            [r.contribution for r in alone], [r.contribution for r in batch[i]], rtol=0, atol=1e-9
        )


def test_a_model_feature_missing_from_the_catalogue_is_refused(bundle: ScoringBundle) -> None:
    # a feature that is its reason code's only one, so that no code is left half read
    alone = bundle.feature_names.index("linked_group_confirmed_mules")
    renamed = [*bundle.feature_names]
    renamed[alone] = "a_feature_nobody_reviewed"
    stranger = ScoringBundle(bundle.booster, bundle.calibrator, bundle.bands, renamed, "test", "test")
    with pytest.raises(ValueError, match="a_feature_nobody_reviewed"):
        ReasonExplainer(stranger)


def test_a_code_whose_features_are_all_missing_gives_no_reason(
    bundle: ScoringBundle, explainer: ReasonExplainer
) -> None:
    staff = [i for i, n in enumerate(bundle.feature_names) if n.startswith("staff_")]
    X = _risky_row().astype(float)
    X[0, staff] = np.nan  # a self-service opening: no staff member
    contrib = np.zeros((1, X.shape[1] + 1))
    contrib[0, staff] = 5.0  # the missing values raise the margin the most
    (reasons,) = explainer.reasons_from_contributions(X, contrib)
    assert reasons == []
    X[0, staff[0]] = 3.0  # one staff value known: the code may speak, naming that value
    (reasons,) = explainer.reasons_from_contributions(X, contrib)
    assert reasons and reasons[0].feature == bundle.feature_names[staff[0]]


# ---------------------------------------------------------------- shap: the same TreeSHAP, shap's plots


def _rows(n: int, seed: int) -> np.ndarray:
    """Rows like the fixture's training rows, missing escort branches included."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(n, len(MODEL_FEATURES))).astype(float)
    X[:, TAMPERED] = rng.integers(0, 2, size=n)
    X[rng.random(n) < 0.1, ESCORT_BRANCHES] = np.nan
    return X


def _png(uri: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    return base64.b64decode(uri.removeprefix(prefix))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The texts of every figure the plots render, recorded as each is rendered."""
    texts: list[list[str]] = []
    render = plots.to_data_uri

    def spy(fig, **kwargs) -> str:
        texts.append([t.get_text() for t in fig.findobj(Text) if t.get_text()])
        return render(fig, **kwargs)

    monkeypatch.setattr(plots, "to_data_uri", spy)
    return texts


def test_the_explanation_wraps_the_request_paths_contributions_and_adds_up_to_the_raw_score(
    bundle: ScoringBundle, explainer: ReasonExplainer
) -> None:
    X = _rows(200, 17)
    contrib, _ = explainer.explain(X)
    explanation = plots.shap_explanation(contrib, X, bundle.feature_names)
    np.testing.assert_array_equal(explanation.values, contrib[:, :-1])
    np.testing.assert_array_equal(explanation.base_values, contrib[:, -1])
    np.testing.assert_array_equal(explanation.data, X)
    assert list(explanation.feature_names) == bundle.feature_names
    raw = bundle.booster.predict(X, raw_score=True)
    np.testing.assert_allclose(
        explanation.values.sum(axis=1) + explanation.base_values, raw, rtol=0, atol=1e-9
    )


def test_an_explanation_of_mismatched_contributions_is_refused(bundle: ScoringBundle) -> None:
    X = _rows(5, 3)
    contrib = bundle.contributions(X)
    with pytest.raises(ValueError, match="base value"):
        plots.shap_explanation(contrib[:, :-1], X, bundle.feature_names)
    with pytest.raises(ValueError, match="base value"):
        plots.shap_explanation(contrib, X, bundle.feature_names[:-1])


# shap warns that its LightGBM output format changed in 0.45; nothing here reads the old format
@pytest.mark.filterwarnings("ignore:LightGBM binary classifier:UserWarning")
def test_shaps_tree_explainer_gives_the_request_paths_contributions(
    bundle: ScoringBundle, explainer: ReasonExplainer
) -> None:
    import shap

    X = _rows(300, 19)
    contrib, _ = explainer.explain(X)
    np.testing.assert_allclose(
        shap.TreeExplainer(bundle.booster).shap_values(X), contrib[:, :-1], rtol=0, atol=1e-6
    )
    # Given a Booster, shap calls pred_contrib itself. Given the booster's dumped trees, it parses
    # them and runs its own TreeSHAP: that agreement is the one that shows they are the same algorithm.
    own = shap.TreeExplainer({"trees": bundle.booster.dump_model()["tree_info"]})
    assert own.model.model_type == "internal"
    np.testing.assert_allclose(own.shap_values(X), contrib[:, :-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(contrib[:, -1], np.ravel(own.expected_value)[0], rtol=0, atol=1e-6)


def test_shaps_plots_are_drawn_in_log_odds_and_closed(bundle: ScoringBundle, drawn: list[list[str]]) -> None:
    import matplotlib.pyplot as plt

    X = _rows(400, 23)
    names = bundle.feature_names
    sample = plots.shap_explanation(bundle.contributions(X), X, names)
    shown = np.array([["none" if math.isnan(v) else f"{v:g}" for v in X[0]]], dtype=object)
    one = plots.shap_explanation(bundle.contributions(X[:1]), X[:1], names, display=shown)[0]
    interactive = plt.isinteractive()
    plt.ion()  # shap's waterfall switches interactive mode off for good; the report must not
    try:
        uris = [
            plots.shap_beeswarm(sample, max_display=8),
            plots.shap_waterfall(one, "Example 1: score 0.990, band critical"),
            plots.shap_dependence(sample, [ESCORT_30D, ESCORT_7D, TAMPERED]),
        ]
        assert plt.isinteractive()
    finally:
        plt.interactive(interactive)
    assert all(_png(uri).startswith(PNG_MAGIC) for uri in uris)
    assert plt.get_fignums() == []  # every pyplot figure shap drew on is closed
    beeswarm, waterfall, dependence = (" ".join(texts) for texts in drawn)
    for texts in (beeswarm, waterfall, dependence):
        assert "log-odds" in texts
    assert "Example 1: score 0.990, band critical" in waterfall
    assert "escort_applicants_30d" in beeswarm and "escort_applicants_30d" in dependence


# ---------------------------------------------------------------- reasons a teller can trust
CORPORATE = MODEL_FEATURES.index("corporate")
COMPANY_CODES = {"YOUNG_COMPANY", "CORP_NO_ONSITE"}
# Codes whose evidence is a value of 0: a brand-new SIM, a lodging house (address kind 0), the
# first category of a channel, an age, a company registered today, no on-site visit.
SHOWN_AT_ZERO = {"NEW_SIM", "ADDR_LODGING_CLUSTER", "CHANNEL", "APPLICANT_AGE", *COMPANY_CODES}
# Codes that a value of 1 everywhere does not make telling: a branch at exactly its usual rate,
# a company visited on site, fellow villagers one standard deviation above their usual rate.
QUIET_AT_ONE = {"BRANCH_SURGE", "CORP_NO_ONSITE", "FELLOW_VILLAGERS"}
PLURAL_AFTER_ONE = re.compile(
    r"\b1 (different |other |corporate )?(accounts|addresses|applicants|applications|branches|"
    r"companies|days|escorts|intermediaries|listings|openings|provinces)\b"
)


def _only(explainer: ReasonExplainer, code: str, value: float, corporate: float) -> list[Reason]:
    """The reasons of a row with every feature at ``value`` when only ``code`` raises the risk."""
    members = set(load_catalogue()["codes"][code]["features"])
    X = np.full((1, len(MODEL_FEATURES)), value)
    X[0, CORPORATE] = corporate
    contrib = np.array([[1.0 if f in members else -1.0 for f in MODEL_FEATURES] + [0.0]])
    return explainer.reasons_from_contributions(X, contrib)[0]


@pytest.mark.parametrize("corporate", [0.0, 1.0], ids=["personal", "corporate"])
@pytest.mark.parametrize("value", [0.0, 1.0, math.nan], ids=["zero", "one", "missing"])
def test_a_reason_is_given_only_when_its_values_say_something(
    explainer: ReasonExplainer, value: float, corporate: float
) -> None:
    codes = load_catalogue()["codes"]
    shown = {code for code in codes if _only(explainer, code, value, corporate)}
    if math.isnan(value):
        expected = set()
    elif value == 0:
        expected = set(SHOWN_AT_ZERO)
    else:
        expected = set(codes) - QUIET_AT_ONE
    if corporate == 0:
        expected -= COMPANY_CODES
    assert shown == expected


@pytest.mark.parametrize("value", [0.0, 1.0, 0.82], ids=["zero", "one", "share"])
def test_every_reason_reads_well_in_both_languages(explainer: ReasonExplainer, value: float) -> None:
    for code in load_catalogue()["codes"]:
        for reason in _only(explainer, code, value, corporate=1.0):
            for text in (reason.text_zh, reason.text_en):
                assert "{" not in text and "nan" not in text, (code, text)
            assert not PLURAL_AFTER_ONE.search(reason.text_en), (code, reason.text_en)
            template = load_catalogue()["codes"][code]["en"]
            if value == 0.82 and any(BY_NAME[f].transform is values.share for f in placeholders(template)):
                assert "82%" in reason.text_en and "82%" in reason.text_zh, (code, reason)


def test_a_share_reads_as_a_percentage_and_one_as_singular(explainer: ReasonExplainer) -> None:
    (profile,) = _only(explainer, "LINKED_RING_PROFILE", 0.82, corporate=0.0)
    assert profile.text_en.startswith("Among the linked applicants, 82% opened outside their home province")
    assert "外省人员占比82%" in profile.text_zh
    (velocity,) = _only(explainer, "ESC_VELOCITY", 1.0, corporate=0.0)
    assert velocity.text_en == (
        "The escort accompanied 1 different applicant in the last 30 days (1 in the last 7), at 1 branch"
    )


def test_no_personal_account_receives_a_company_reason(explainer: ReasonExplainer) -> None:
    rng = np.random.default_rng(3)
    X = rng.poisson(2.0, size=(500, len(MODEL_FEATURES))).astype(float)
    X[:, CORPORATE] = 0.0
    contrib = np.hstack([rng.random((500, len(MODEL_FEATURES))), np.zeros((500, 1))])  # all raise
    explainer_all = ReasonExplainer(explainer.bundle, top_k=len(load_catalogue()["codes"]))
    given = {r.code for row in explainer_all.reasons_from_contributions(X, contrib) for r in row}
    assert given.isdisjoint(COMPANY_CODES)
    X[:, CORPORATE] = 1.0
    X[:, MODEL_FEATURES.index("onsite_verified")] = 0.0
    given = {r.code for row in explainer_all.reasons_from_contributions(X, contrib) for r in row}
    assert given >= COMPANY_CODES  # the same rows as corporate openings do get them
