"""The feature catalogue in docs/features.md, written from the registry.

``python -m duanka.features.catalogue`` rewrites the generated part of the page;
a test fails when the page and the registry disagree.
"""

from __future__ import annotations

from pathlib import Path

from duanka.features.declaration import Family, Feature
from duanka.features.registry import FEATURE_SET_VERSION, FEATURES, MODEL_FEATURES

START = "<!-- catalogue:start (python -m duanka.features.catalogue) -->"
END = "<!-- catalogue:end -->"
PAGE = Path(__file__).resolve().parent.parent / "docs" / "features.md"


def catalogue_markdown() -> str:
    """Markdown tables of every feature, grouped by family, in registry order."""
    lines = [
        f"Feature set version `{FEATURE_SET_VERSION}`: {len(FEATURES)} features, "
        f"{len(MODEL_FEATURES)} in `MODEL_FEATURES`.",
        "",
    ]
    for family in Family:
        members = [f for f in FEATURES if f.family is family]
        lines += [
            f"### {family} ({len(members)})",
            "",
            "| feature | window | model | meaning | 含义 |",
            "|---|---|---|---|---|",
        ]
        for f in members:
            window = _window(f)
            en, zh = f.en, f.zh
            if f.codes:
                legend = ", ".join(f"{i} = {c}" for i, c in enumerate(f.codes))
                en, zh = f"{en} (codes: {legend})", f"{zh}（编码：{legend}）"
            model = "yes" if f.in_model else "no"
            lines.append(f"| `{f.name}` | {window} | {model} | {en} | {zh} |")
        lines.append("")
    return "\n".join(lines)


def _window(feature: Feature) -> str:
    """``30 d``; ``own`` for the application's own facts; ``all`` for counts with no window."""
    if feature.window_days is not None:
        return f"{feature.window_days} d"
    return "all" if feature.aggregates else "own"


def render(page: str) -> str:
    """``page`` with its generated part replaced by the current catalogue."""
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{catalogue_markdown()}\n{END}{tail}"


if __name__ == "__main__":
    PAGE.write_text(render(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
