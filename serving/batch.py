"""Batch scoring: every application with the state as it was at its own ``applied_at``.

The offline builder (:func:`duanka.features.offline.build_features`) computes exactly
that for a whole history at once, and is proven equal to the online store the
service scores from, and both decide through one function
(:func:`duanka.serving.decision.decide`), so batch and service give the same score, band and
reasons to the same application. Reasons are computed for medium-or-higher bands
(or every row, on request), because explanation, not prediction, is what costs. An applicant on the store's
joint-punishment list at ``applied_at`` is refused by rule (:mod:`duanka.serving.rules`):
band ``blocked``, action ``refuse``, reason ``WATCHLIST``; the score is still the model's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from duanka.data.contract import APPLICATIONS
from duanka.data.events import APPLICATION_EVENTS
from duanka.data.ingest import pseudonymise_applications
from duanka.data.pseudonym import Pseudonymiser
from duanka.data.reader import Encoding, read_raw
from duanka.data.store import EventStore
from duanka.data.validate import validate
from duanka.data.watchlist import Watchlist
from duanka.features.offline import build_features
from duanka.features.registry import MAX_WINDOW_DAYS, MODEL_FEATURES
from duanka.serving.decision import answer, decide
from duanka.serving.model_source import LoadedModel
from duanka.serving.rules import RuleDecision, refuse_listed, watchlist_decision
from duanka.serving.workbook import write_workbook
from duanka.training.bands import ACTIONS, DailyBands, RefreshPolicy, day_start, local_days
from duanka.training.explain import Reason

if TYPE_CHECKING:
    from distributed import Client

SCORE_COLUMNS = (
    "application_id",
    "score",
    "band",
    "action",
    "reason_codes",
    "reasons_zh",
    "reasons_en",
    "model_version",
)
CODE_SEPARATOR = "|"
TEXT_SEPARATOR = " | "
# rows decided per call: bounds the memory of a chunk's contributions (a float per feature and row)
_CHUNK = 20_000


@dataclass(frozen=True)
class FileScores:
    """Scores of a contract file, and the rows it could not score.

    Attributes
    ----------
    scores : pandas.DataFrame
        :data:`SCORE_COLUMNS`, one row per valid application.
    rejections : pandas.DataFrame
        ``row, application_id, column, reason`` for rows that break the contract.
    rows_read : int
        Data rows in the file.
    """

    scores: pd.DataFrame
    rejections: pd.DataFrame
    rows_read: int

    @property
    def rejected_share(self) -> float:
        """The share of the file's rows that broke the contract (0 for an empty file)."""
        return self.rejections["row"].nunique() / max(1, self.rows_read)


def _matrix(features: pd.DataFrame) -> np.ndarray:
    return features.loc[:, list(MODEL_FEATURES)].to_numpy(dtype=np.float64)


def _scores(model: LoadedModel, features: pd.DataFrame) -> np.ndarray:
    """The model's calibrated score of each feature row, without bands or reasons (to set cuts)."""
    X = _matrix(features)
    return np.concatenate(
        [np.empty(0)]
        + [model.registered.bundle.score(X[start : start + _CHUNK]) for start in range(0, len(X), _CHUNK)]
    )


def daily_bands(model: LoadedModel, history: pd.DataFrame, days: np.ndarray) -> DailyBands:
    """The band cuts of each of ``days``, from the model's scores of the openings in ``history``.

    Parameters
    ----------
    model : LoadedModel
        The model whose scores set the cuts (and whose training cuts are the fallback).
    history : pandas.DataFrame
        ``applied_at`` and the features of at least every opening of the
        days of :class:`duanka.training.bands.RefreshPolicy` before each day.
    days : numpy.ndarray
        Local days (``datetime64[D]``).
    """
    return DailyBands.from_scores(
        model.registered.bundle.bands, history["applied_at"], _scores(model, history), days
    )


def band_history(features: pd.DataFrame, chosen: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``features`` whose scores cut the bands of ``chosen``'s days, and those days."""
    days = np.unique(local_days(chosen["applied_at"])) if len(chosen) else np.empty(0, "datetime64[D]")
    if not len(days):
        return features.iloc[:0], days
    reach = day_start(days[0]) - RefreshPolicy.configured().window
    applied = features["applied_at"]
    return features.loc[(applied >= reach) & (applied < day_start(days[-1]))], days


def score_features(
    features: pd.DataFrame,
    model: LoadedModel,
    *,
    bands: DailyBands | None = None,
    explain_all: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Scores, bands, actions and reasons of feature rows.

    Parameters
    ----------
    features : pandas.DataFrame
        ``application_id`` and every feature of :data:`MODEL_FEATURES`; ``applied_at`` too
        when ``bands`` is given.
    model : LoadedModel
        A verified, compatible model.
    bands : DailyBands, optional
        The cuts of each day (:func:`daily_bands`); without them, the cuts fixed at training.
    explain_all : bool
        Reasons for every row, not only medium-or-higher bands.
    progress : bool
        Show progress bars on the terminal.

    Returns
    -------
    pandas.DataFrame
        :data:`SCORE_COLUMNS`, in the order of ``features``; reason columns are
        empty strings where not explained or where nothing raises the risk.
    """
    scores, _ = _decided(features, model, bands=bands, explain_all=explain_all, progress=progress)
    return scores


def _decided(
    features: pd.DataFrame,
    model: LoadedModel,
    *,
    bands: DailyBands | None,
    explain_all: bool,
    progress: bool,
) -> tuple[pd.DataFrame, list[list[Reason]]]:
    """:func:`score_features`, and each row's reasons as found (what the decision record words)."""
    X = _matrix(features)
    n = len(X)
    cuts = model.registered.bundle.bands if bands is None else bands
    scores = np.empty(n)
    assigned = np.empty(n, dtype=object)
    codes = np.empty(n, dtype=object)
    texts_zh = np.empty(n, dtype=object)
    texts_en = np.empty(n, dtype=object)
    reasons: list[list[Reason]] = []
    with progress_bars(progress) as bar:
        advance = bar("scoring", n)
        for start in range(0, n, _CHUNK):
            rows = slice(start, min(n, start + _CHUNK))
            decided = decide(
                model,
                X[rows],
                cuts,
                applied_at=None if bands is None else features["applied_at"].iloc[rows],
                explain_all=explain_all,
            )
            scores[rows] = decided.scores
            assigned[rows] = decided.bands
            codes[rows] = [CODE_SEPARATOR.join(r.code for r in found) for found in decided.reasons]
            texts_zh[rows] = [TEXT_SEPARATOR.join(r.text_zh for r in found) for found in decided.reasons]
            texts_en[rows] = [TEXT_SEPARATOR.join(r.text_en for r in found) for found in decided.reasons]
            reasons.extend(decided.reasons)
            advance(rows.stop - start)
    scores = pd.DataFrame(
        {
            "application_id": features["application_id"].to_numpy(dtype=object),
            "score": scores,
            "band": assigned,
            "action": pd.Series(assigned).map(ACTIONS).to_numpy(dtype=object),
            "reason_codes": codes,
            "reasons_zh": texts_zh,
            "reasons_en": texts_en,
            "model_version": model.version,
        },
        columns=list(SCORE_COLUMNS),
    )
    return scores, reasons


def _period_where(start: pd.Timestamp, end: pd.Timestamp) -> pc.Expression:
    """Applications a window of ``[start, end)`` can reach: the period and a year before it."""
    stamp = APPLICATION_EVENTS.field("applied_at").type
    reach = start - pd.Timedelta(days=MAX_WINDOW_DAYS)
    applied = pc.field("applied_at")
    return (applied >= pa.scalar(reach.to_pydatetime(), stamp)) & (
        applied < pa.scalar(end.to_pydatetime(), stamp)
    )


def score_period(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    *,
    explain_all: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Score the stored applications applied in ``[start, end)``, each as of its own ``applied_at``.

    Every application that a window can reach is history (no window looks
    back further than :data:`duanka.features.registry.MAX_WINDOW_DAYS`), and every
    confirmation; the point-in-time rule keeps confirmations from after an
    application out of its features.
    """
    return decide_period(store, start, end, model, explain_all=explain_all, progress=progress).scores


@dataclass(frozen=True)
class PeriodDecisions:
    """A stored period's batch decisions: the scores file's rows, and what the decision record keeps
    of each (``duanka score --record``), row for row.

    Attributes
    ----------
    scores : pandas.DataFrame
        :data:`SCORE_COLUMNS`, the hard rule applied: what :func:`score_period` returns.
    features : pandas.DataFrame
        ``application_id``, ``applied_at`` and the features of each scored application.
    model_bands : numpy.ndarray
        The band the score alone gives each row (a rule refusal's ``model_band``).
    reasons : list of list of Reason
        The model's reasons of each row (empty where it was not explained).
    refusals : list of RuleDecision or None
        The hard rule's refusal of each row; None where the model decided.
    reached : pyarrow.Table
        The stored applications the period's windows reach (the scored ones among them).
    """

    scores: pd.DataFrame
    features: pd.DataFrame
    model_bands: np.ndarray
    reasons: list[list[Reason]]
    refusals: list[RuleDecision | None]
    reached: pa.Table

    def __len__(self) -> int:
        return len(self.scores)

    def applications(self) -> pd.DataFrame:
        """``application_id``, ``branch_id``, ``applied_at`` and ``row_digest`` of each scored row.

        ``row_digest`` is the one the store keeps: the keyed digest of the application's contract
        row, which the service computes for that row too (:mod:`duanka.data.derived`).
        """
        ids = self.features["application_id"].to_numpy(dtype=object)
        stored = (
            self.reached.select(["application_id", "branch_id", "row_digest"])
            .filter(pc.is_in(self.reached["application_id"], pa.array(ids, pa.string())))
            .to_pandas()
            .drop_duplicates("application_id")
            .set_index("application_id")
        )
        found = stored.reindex(ids)
        if found.isna().any().any():
            # the features were built from ``reached``: a row missing there is a bug, never a NULL
            raise RuntimeError("a scored application is missing from the stored applications scored")
        return pd.DataFrame(
            {
                "application_id": ids,
                "branch_id": found["branch_id"].to_numpy(dtype=object),
                "applied_at": self.features["applied_at"].to_numpy(),
                "row_digest": found["row_digest"].to_numpy(dtype=object),
            }
        )

    def answers(self, model: LoadedModel, rows: np.ndarray) -> list[dict]:
        """The answers of ``rows`` (positions) as the service words and stores them (:func:`answer`).

        Parameters
        ----------
        model : LoadedModel
            The model that decided them.
        rows : numpy.ndarray
            Row positions, the same in :attr:`scores`, :attr:`features` and the rest.
        """
        X = _matrix(self.features.iloc[rows])
        ids = self.features["application_id"].iloc[rows].tolist()
        scores = self.scores["score"].to_numpy()
        return [
            answer(
                model,
                aid,
                x,
                scores[row],
                str(self.model_bands[row]),
                self.reasons[row],
                self.refusals[row],
            )
            for row, aid, x in zip(rows.tolist(), ids, X, strict=True)
        ]


def decide_period(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    *,
    explain_all: bool = False,
    progress: bool = False,
) -> PeriodDecisions:
    """:func:`score_period`, keeping what each decision's answer is worded from.

    Raises
    ------
    data.store.StoreOutdated
        A part of the store lacks a column this code stores.
    """
    reached = store.applications().filter(_period_where(start, end))
    listings = store.watchlist()
    features = build_features(reached, store.labels(), listings=listings, progress=progress)
    chosen = features.loc[(features["applied_at"] >= start) & (features["applied_at"] < end)]
    bands = daily_bands(model, *band_history(features, chosen))
    scores, reasons = _decided(chosen, model, bands=bands, explain_all=explain_all, progress=progress)
    model_bands = scores["band"].to_numpy(dtype=object)
    listed = _listings(scores, chosen, reached, Watchlist(listings))
    refusals: list[RuleDecision | None] = [None] * len(scores)
    if listed is not None:
        scores = refuse_listed(scores, listed)
        found = listed["source"].notna().to_numpy()
        for row in np.flatnonzero(found).tolist():
            refusals[row] = watchlist_decision(listed["source"].iloc[row], listed["listed_at"].iloc[row])
    return PeriodDecisions(scores, chosen, model_bands, reasons, refusals, reached)


def _partition_history(path: str, model: LoadedModel, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """``applied_at`` and score of one feature partition's rows that cut the bands of ``[start, end)``."""
    features = pd.read_parquet(path)
    (first_day,) = local_days(pd.Series([start]))
    reach = day_start(first_day) - RefreshPolicy.configured().window
    history = features.loc[(features["applied_at"] >= reach) & (features["applied_at"] < end)]
    return pd.DataFrame({"applied_at": history["applied_at"], "score": _scores(model, history)})


def _score_partition(
    path: str,
    model: LoadedModel,
    start: pd.Timestamp,
    end: pd.Timestamp,
    explain_all: bool,
    bands: DailyBands,
) -> pd.DataFrame:
    """One feature partition's rows in ``[start, end)``, scored on a worker, with ``applied_at``."""
    features = pd.read_parquet(path)
    chosen = features.loc[(features["applied_at"] >= start) & (features["applied_at"] < end)]
    scores = score_features(chosen, model, bands=bands, explain_all=explain_all)
    scores.insert(1, "applied_at", chosen["applied_at"].to_numpy())
    return scores


def score_period_distributed(
    store: EventStore,
    start: pd.Timestamp,
    end: pd.Timestamp,
    model: LoadedModel,
    *,
    client: Client,
    explain_all: bool = False,
    partitions: int | None = None,
    scratch: str | Path | None = None,
) -> pd.DataFrame:
    """:func:`score_period` on a Dask cluster: the same scores, rows and order.

    The workers read the store's Parquet parts themselves (so the store must
    be on storage every worker reaches), build the features per partition
    with :func:`duanka.features.distributed.feature_partitions` in a stage folder under
    ``scratch`` (:func:`duanka.features.distributed.scratch_folder`), and score each
    application partition with the same verified model, sent to each worker once.
    """
    from duanka.features.distributed import BuildOptions, feature_partitions, scratch_folder

    parts = {t: store.parts(t) for t in ("applications", "labels")}
    listings = store.watchlist()  # small: read here, sent to every worker once
    with scratch_folder(client, scratch) as folder:
        paths = feature_partitions(
            client,
            parts["applications"] or APPLICATION_EVENTS.empty_table(),
            parts["labels"] or store.labels(),
            scratch=folder,
            listings=listings,
            options=BuildOptions(partitions=partitions, applications_where=_period_where(start, end)),
        )
        shipped = client.scatter(model, broadcast=True, hash=False)
        # Two passes: a day's cuts read the scores of every partition's openings before it.
        history = pd.concat(
            client.gather(
                [client.submit(_partition_history, p, shipped, start, end, pure=False) for p in paths]
            ),
            ignore_index=True,
        )
        days = np.unique(local_days(pd.date_range(start, end, freq="h", inclusive="left")))
        bands = DailyBands.from_scores(
            model.registered.bundle.bands, history["applied_at"], history["score"].to_numpy(), days
        )
        scored = [
            client.submit(_score_partition, p, shipped, start, end, explain_all, bands, pure=False)
            for p in paths
        ]
        frames = [f for f in client.gather(scored) if len(f)]
    if not frames:
        return score_features(pd.DataFrame(columns=["application_id", *MODEL_FEATURES]), model)
    scores = pd.concat(frames, ignore_index=True)
    scores = scores.sort_values(["applied_at", "application_id"], kind="stable", ignore_index=True)
    watchlist = Watchlist(listings)
    applicants = store.applications(["application_id", "applicant_key"]) if len(watchlist) else None
    return apply_watchlist(scores.drop(columns="applied_at"), scores, applicants, watchlist)


def score_file(
    path: Path,
    store: EventStore,
    keys: Pseudonymiser,
    model: LoadedModel,
    *,
    explain_all: bool = False,
    progress: bool = False,
    encoding: Encoding = Encoding.UTF8,
) -> FileScores:
    """Score a contract file's applications against the stored history.

    The file goes through the ingestion path (read, validate, pseudonymise) but
    nothing is written to the store. Its applications join the history in
    time order, so a later one sees an earlier one as the service would have.
    An application already in the store is scored as stored.

    Raises
    ------
    data.store.StoreKeyMismatch
        ``keys`` is not the key the store was pseudonymised with.
    data.reader.UnusableFile
        The file cannot be read as a contract table.
    """
    store.check_key(keys.key_id)
    raw = read_raw(path, APPLICATIONS, encoding)
    checked = validate(raw, APPLICATIONS)
    events = pseudonymise_applications(checked.valid, keys)
    submitted = pa.Table.from_pandas(
        events.loc[:, APPLICATION_EVENTS.names].reset_index(drop=True),
        schema=APPLICATION_EVENTS,
        preserve_index=False,
    )
    history = store.applications()
    new = submitted.filter(pc.invert(pc.is_in(submitted["application_id"], history["application_id"])))
    every = pa.concat_tables([history, new])
    listings = store.watchlist()
    features = build_features(every, store.labels(), listings=listings, progress=progress)
    chosen = features.loc[features["application_id"].isin(submitted["application_id"].to_pylist())]
    bands = daily_bands(model, *band_history(features, chosen))
    scores = score_features(chosen, model, bands=bands, explain_all=explain_all, progress=progress)
    scored = apply_watchlist(scores, chosen, every, Watchlist(listings))
    return FileScores(scored, checked.rejections, raw.rows_read)


def apply_watchlist(
    scores: pd.DataFrame, features: pd.DataFrame, applications: pa.Table | None, watchlist: Watchlist
) -> pd.DataFrame:
    """Refuse, by rule, the scored applications whose applicant was listed at their ``applied_at``.

    Parameters
    ----------
    scores : pandas.DataFrame
        :func:`score_features` of ``features``, row for row.
    features : pandas.DataFrame
        ``application_id`` and ``applied_at`` of the scored applications.
    applications : pyarrow.Table or None
        ``application_id`` and ``applicant_key`` of at least those applications (stored-form
        events); only read when ``watchlist`` holds a listing.
    watchlist : Watchlist
        The listings to apply.
    """
    listings = _listings(scores, features, applications, watchlist)
    return scores if listings is None else refuse_listed(scores, listings)


def _listings(
    scores: pd.DataFrame, features: pd.DataFrame, applications: pa.Table | None, watchlist: Watchlist
) -> pd.DataFrame | None:
    """:meth:`Watchlist.listings_for` the scored applications, row for row; None when nobody can be
    listed (:func:`apply_watchlist`'s parameters)."""
    if len(watchlist) == 0 or scores.empty or applications is None:
        return None
    ids = applications.select(["application_id", "applicant_key"]).to_pandas()
    applicant = features["application_id"].map(
        ids.drop_duplicates("application_id").set_index("application_id")["applicant_key"]
    )
    return watchlist.listings_for(
        applicant.reset_index(drop=True), features["applied_at"].reset_index(drop=True)
    )


def write_scores(
    scores: pd.DataFrame, out: Path, *, excel: bool = False, rejections: pd.DataFrame | None = None
) -> Path:
    """Write scores as CSV (UTF-8), Parquet or an Excel workbook, by ``out``'s suffix; the path.

    ``excel``: an ``.xlsx`` workbook (:mod:`duanka.serving.workbook`) at ``out`` with that
    suffix, whatever ``out``'s was: sheet ``scores``, and sheet ``rejected`` when ``rejections``
    holds rows. Identifiers stay text there, where a CSV opened in Excel turns them into numbers.

    Raises
    ------
    ValueError
        Any other suffix.
    """
    out = Path(out)
    suffix = ".xlsx" if excel else out.suffix.lower()
    if suffix not in (".csv", ".parquet", ".xlsx"):
        raise ValueError(f"{out}: write scores as .csv, .parquet or .xlsx")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".xlsx":
        sheets = {"scores": scores}
        if rejections is not None and len(rejections):
            sheets["rejected"] = rejections
        return write_workbook(sheets, out.with_suffix(".xlsx"))
    if suffix == ".csv":
        scores.to_csv(out, index=False, encoding="utf-8")
    else:
        scores.to_parquet(out, index=False)
    return out


@contextmanager
def progress_bars(show: bool) -> Iterator:
    """``bar(label, total)`` returns ``advance(n)``; a no-op unless ``show``."""
    if not show:
        yield lambda label, total: lambda n: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:

        def bar(label: str, total: int):
            task = progress.add_task(label, total=total)
            return lambda n: progress.update(task, advance=n)

        yield bar
