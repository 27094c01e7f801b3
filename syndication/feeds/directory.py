"""The lists of feeds: ``feeds.opml`` (OPML 2.0, for importing every feed into a reader) and ``index.html``
(a page with autodiscovery links). Both are built once per build, in the site's language (``FeedWords``, the web
pages' catalog: ``templates/web/feeds_index.html`` is marked for it as the pages' templates are)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from lxml import etree

from syndication.feeds.catalog import ENGLISH, FORMAT_LABELS, N_, Feed, FeedWords, Site
from syndication.resources import web_templates

TEMPLATES = web_templates()
_GROUPS = (
    ("site", N_("Everything")), ("theme", N_("Themes")), ("region", N_("Regions")), ("language", N_("Languages")),
    ("author", N_("Authors")),
)  # fmt: skip


def render_opml(site: Site, feeds: Sequence[Feed], updated: datetime, words: FeedWords = ENGLISH) -> bytes:
    """OPML 2.0 listing every feed (its Atom document), grouped by dimension, its headings in ``words``."""
    opml = etree.Element("opml", version="2.0")
    head = etree.SubElement(opml, "head")
    etree.SubElement(head, "title").text = words.gettext("%(site)s: feeds", site=site.title)
    etree.SubElement(head, "dateCreated").text = format_datetime(updated, usegmt=True)
    etree.SubElement(head, "docs").text = "http://opml.org/spec2.opml"
    body = etree.SubElement(opml, "body")
    for dimension, label in _GROUPS:
        members = [feed for feed in feeds if feed.dimension == dimension]
        if not members:
            continue
        worded = words.gettext(label)
        group = etree.SubElement(body, "outline", text=worded, title=worded)
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


def render_index(
    site: Site, feeds: Sequence[Feed], site_templates: Path | None = None, words: FeedWords = ENGLISH
) -> bytes:
    """An HTML page listing every feed in each format, with autodiscovery links for the main ones, worded in
    ``words`` (its ``lang`` is theirs).

    ``site_templates`` (``[web] templates_dir``) may hold a ``feeds_index.html`` that replaces the shipped one.
    """
    folders = [str(folder) for folder in (site_templates, TEMPLATES) if folder is not None]
    environment = Environment(
        loader=FileSystemLoader(folders),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
    )
    # As the pages' environments (``web.templating``): ``{% trans %}`` blocks are wrapped like paragraphs.
    environment.policies["ext.i18n.trimmed"] = True
    environment.install_gettext_translations(words.translations, newstyle=True)  # type: ignore[attr-defined]
    groups = [(words.gettext(label), [f for f in feeds if f.dimension == dimension]) for dimension, label in _GROUPS]
    html = environment.get_template("feeds_index.html").render(
        site=site,
        language=words.language,
        groups=[(label, members) for label, members in groups if members],
        discoverable=[f for f in feeds if f.dimension in ("site", "theme")],
        formats=FORMAT_LABELS,
    )
    return html.encode("utf-8")
