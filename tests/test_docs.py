"""The documentation site: it builds with ``mkdocs build --strict``, reads offline, and its
command-line page is generated from the live Typer app. The README links to every page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GENERATED = {"cli.md"}  # written by docs/hooks.py at build time, not kept in docs/

# An external URL loaded as a resource: a script, a stylesheet, a font, an import or url() in CSS.
REMOTE_HTML = re.compile(r"<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)=[\"']?(?:https?:)?//", re.I)
REMOTE_CSS = re.compile(r"(?:@import\s+(?:url\()?|url\()\s*[\"']?(?:https?:)?//", re.I)


def _nav_pages() -> list[str]:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.SafeLoader)
    pages = []
    for entry in config["nav"]:
        (page,) = entry.values() if isinstance(entry, dict) else (entry,)
        pages.append(page)
    return pages


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    done = subprocess.run([*cmd, "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    problems = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not problems, log
    return out


def test_every_nav_page_is_built(site):
    for page in _nav_pages():
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.exists(), page


def test_every_page_in_docs_is_in_the_nav():
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk | GENERATED == set(_nav_pages())


def test_the_site_fetches_nothing_from_elsewhere(site):
    checked = 0
    for path in site.rglob("*"):
        if path.suffix == ".html":
            found = REMOTE_HTML.findall(path.read_text(encoding="utf-8"))
        elif path.suffix == ".css":
            found = REMOTE_CSS.findall(path.read_text(encoding="utf-8"))
        else:
            continue
        checked += 1
        assert not found, f"{path.relative_to(site)} loads {found}"
    assert checked > len(_nav_pages())  # the pages and the theme's stylesheets were read


def test_cli_page_is_generated_from_the_app(site):
    import typer.main

    from fmnist.cli import app

    html = (site / "cli" / "index.html").read_text(encoding="utf-8")
    commands = typer.main.get_command(app).commands
    assert len(commands) >= 10
    for name in commands:
        assert f'id="fmnist-{name}"' in html, name
    for flag in ("--time-budget", "--resume", "--top-k", "--api-key", "--executor"):
        assert flag in html, flag
    assert not (DOCS / "cli.md").exists()  # never a hand-kept copy that could drift


def test_readme_is_a_front_page_linking_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "make run" in readme and "make test" in readme
    links = set(re.findall(r"\]\(([^)#\s]+)", readme))
    for target in links - {link for link in links if link.startswith("http")}:
        assert (ROOT / target).exists(), target
    for page in set(_nav_pages()) - GENERATED:
        assert f"docs/{page}" in links, page
