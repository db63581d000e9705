"""HTML pages from the Jinja2 templates in ``fmnist/templates/``, all sharing one stylesheet.

    pages.render("run_report.html", name="default", ...)   # -> one self-contained HTML string

Every page inlines ``style.css`` (no ``<link>`` to fetch, so a report reads offline and the
server's page needs no second request) and escapes every value it is given. Jinja2 is
imported on first use, so commands that write no page never load it.
"""

from __future__ import annotations

import base64
from functools import cache

TEMPLATES = "templates"  # the folder beside this module
STYLESHEET = "style.css"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@cache
def environment():
    """The one Jinja2 environment: package templates, autoescaping on, a ``b64`` filter for embedded images."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fmnist", TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
    )
    env.filters["b64"] = _b64
    return env


@cache
def stylesheet() -> str:
    """The shared CSS, as every page inlines it."""
    return environment().loader.get_source(environment(), STYLESHEET)[0]


def render(template: str, **context) -> str:
    """A template rendered with ``context`` and the shared stylesheet (as ``css``)."""
    from markupsafe import Markup

    page = environment().get_template(template).render(css=Markup(stylesheet()), **context)
    return page if page.endswith("\n") else page + "\n"
