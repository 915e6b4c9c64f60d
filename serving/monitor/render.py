"""The monitoring page: one self-contained HTML file (inline CSS, figures as PNG data URIs), autoescaped."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

import duanka.training as training_room
from duanka.serving.monitor.engine import Monitoring

TEMPLATE = "monitor.html.j2"


@dataclass(frozen=True)
class Served:
    """What the page says when the service shows it (``/monitor``): who is signed in, a note on
    the run shown, and the way to the model versions."""

    key_id: str
    note: str | None
    models_url: str


@cache
def _environment() -> jinja2.Environment:
    # the page's own template first, then the model report's folder for the style both pages share
    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                jinja2.FileSystemLoader(Path(training_room.__file__).with_name("templates")),
            ]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(monitoring: Monitoring, served: Served | None = None) -> str:
    """The page of one monitoring run; ``served`` when the service shows it."""
    return _environment().get_template(TEMPLATE).render(m=monitoring, served=served)


def write_html(monitoring: Monitoring, out: Path) -> Path:
    """Write :func:`render_html` to ``out`` (its folder created); returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(monitoring), encoding="utf-8")
    return out
