"""The test run's warning filters (pyproject.toml): a deprecation raised in our code fails the run,
the named third-party ones are hidden, and any other one is still shown."""

from __future__ import annotations

import warnings

import pytest


def _warn_from(module: str, category: type[Warning], message: str = "old") -> list[warnings.WarningMessage]:
    """Warn as ``module`` would, under the filters in force; what was shown, not raised or hidden."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.warn_explicit(message, category, filename=f"{module}.py", lineno=1, module=module)
    return shown


@pytest.mark.parametrize("module", ["duanka.data.ingest", "duanka.serving.api", "tests.test_ingest"])
@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning])
def test_a_deprecation_in_our_code_fails_the_run(module, category):
    with pytest.raises(category):
        _warn_from(module, category)


@pytest.mark.parametrize(
    ("module", "category", "message"),
    [
        ("mlflow.store.tracking.sqlalchemy_store", DeprecationWarning, "noload"),
        (
            "pandas.core.series",
            DeprecationWarning,
            "Series.values returning an ndarray that drops timezone information for DatetimeTZDtype",
        ),
        ("shap.plots.colors._colors", PendingDeprecationWarning, "The set_under function will be deprecated"),
    ],
)
def test_the_named_third_party_deprecations_are_hidden(module, category, message):
    assert _warn_from(module, category, message) == []


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("pandas.core.series", "Series.values returning an object-dtype ndarray"),  # not the named one
        ("sklearn.utils", "old"),
        ("duanka_lookalike.module", "old"),
    ],
)
def test_any_other_deprecation_is_shown(module, message):
    assert [str(w.message) for w in _warn_from(module, DeprecationWarning, message)] == [message]
