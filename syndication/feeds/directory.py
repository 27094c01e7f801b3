"""The lists of feeds: ``feeds.opml`` (OPML 2.0, for importing every feed into a reader) and ``index.html``
(a page with autodiscovery links)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from lxml import etree

from syndication.feeds.catalog import FORMAT_LABELS, Feed, Site
from syndication.resources import web_templates

TEMPLATES = web_templates()
_GROUPS = (
    ("site", "Everything"), ("theme", "Themes"), ("region", "Regions"), ("language", "Languages"), ("author", "Authors")
)  # fmt: skip


def render_opml(site: Site, feeds: Sequence[Feed], updated: datetime) -> bytes:
    """OPML 2.0 listing every feed (its Atom document), grouped by dimension."""
    opml = etree.Element("opml", version="2.0")
    head = etree.SubElement(opml, "head")
    etree.SubElement(head, "title").text = f"{site.title}: feeds"
    etree.SubElement(head, "dateCreated").text = format_datetime(updated, usegmt=True)
    etree.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = etree.SubElement(opml, "body")
    for dimension, label in _GROUPS:
        members = [feed for feed in feeds if feed.dimension == dimension]
        if not members:
            continue
        group = etree.SubElement(body, "outline", text=label, title=label)
        for feed in members:
            etree.SubElement(
                group,
                "outline",
                type="rss",
                text=feed.title,
                title=feed.title,
                xmlUrl=site.url(feed.document_path("atom")),
                htmlUrl=site.base_url + "/",
                description=feed.description,
            )
    result: bytes = etree.tostring(opml, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return result


def render_index(site: Site, feeds: Sequence[Feed], site_templates: Path | None = None) -> bytes:
    """An HTML page listing every feed in each format, with autodiscovery links for the main ones.

    ``site_templates`` (``[web] templates_dir``) may hold a ``feeds_index.html`` that replaces the shipped one.
    """
    folders = [str(folder) for folder in (site_templates, TEMPLATES) if folder is not None]
    environment = Environment(
        loader=FileSystemLoader(folders), autoescape=select_autoescape(["html"]), undefined=StrictUndefined
    )
    groups = [(label, [f for f in feeds if f.dimension == dimension]) for dimension, label in _GROUPS]
    html = environment.get_template("feeds_index.html").render(
        site=site,
        groups=[(label, members) for label, members in groups if members],
        discoverable=[f for f in feeds if f.dimension in ("site", "theme")],
        formats=FORMAT_LABELS,
    )
    return html.encode("utf-8")
