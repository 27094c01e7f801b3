"""What goes in a digest: the posts of a window, grouped by the themes a reader follows. Pure: no I/O.

An edition's digest shows the posts the edition holds: those published in its window and, with ``with_late``,
late ones published before it that reached the store (or had their embargo lifted) only after the edition of
their own window was made. Each shows its own date; ``Digest.late`` counts them.

Sections follow the configured order of themes. A post on several followed themes appears once, in the first of
them, naming the others ("also in"). Posts on no configured theme go to a last catch-all section, only for
readers who follow everything. A section over its cap ends with "N more on <theme>".

A reader's ``Reading`` (``core.languages``) chooses by language: ``only`` leaves out the posts in languages they
do not read; ``first`` puts the posts in theirs first in each section (each part newest first), so a section's
cap leaves out the others first. Without one, every post is shown as published.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from syndication.core.languages import Reading
from syndication.core.models import Post, Theme


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One post in a section, and the other followed themes it is also on."""

    post: Post
    also_in: tuple[Theme, ...] = ()


@dataclass(frozen=True, slots=True)
class Section:
    """The posts of one theme (``theme`` is None for the catch-all section), newest first."""

    theme: Theme | None
    items: tuple[DigestItem, ...]
    more: int = 0  # posts left out by the section's cap

    @property
    def total(self) -> int:
        """How many posts the section stands for, shown or not."""
        return len(self.items) + self.more


@dataclass(frozen=True, slots=True)
class Digest:
    """One digest: the window ``(since, until]`` and its sections, in the configured order of themes."""

    since: datetime
    until: datetime
    sections: tuple[Section, ...]
    followed: frozenset[str] | None  # None: everything
    late: int = 0  # posts (shown or behind a "more" link) published at or before ``since``: late ones
    reading: Reading | None = None  # how its posts were chosen by language (None: all, as published)

    @property
    def post_count(self) -> int:
        """Posts in the digest, shown or behind a "more" link."""
        return sum(section.total for section in self.sections)

    @property
    def shown_count(self) -> int:
        """Posts shown in full."""
        return sum(len(section.items) for section in self.sections)

    @property
    def held_back_count(self) -> int:
        """Posts behind a section's "N more" link (left out by its cap or by the size limit)."""
        return sum(section.more for section in self.sections)

    @property
    def themes(self) -> tuple[Theme, ...]:
        """The themes with a section, in order (the catch-all has none)."""
        return tuple(section.theme for section in self.sections if section.theme is not None)


def compose_digest(
    posts: Sequence[Post],
    themes: Sequence[Theme],
    *,
    since: datetime,
    until: datetime,
    followed: Collection[str] | None = None,
    section_cap: int | None = None,
    with_late: bool = False,
    reading: Reading | None = None,
) -> Digest | None:
    """The digest of ``posts`` published in ``(since, until]`` for a reader following ``followed`` (None: all);
    ``with_late`` keeps those published at or before ``since`` too (an edition's late posts, counted in ``late``);
    ``reading`` chooses and orders them by language (None: every post, as published).

    Returns None when nothing in the window is for this reader: no digest is rendered or sent then.
    """
    wanted = None if followed is None else frozenset(followed)
    order = [theme for theme in themes if wanted is None or theme.slug in wanted]
    by_slug = {theme.slug: theme for theme in themes}
    buckets: dict[str | None, list[DigestItem]] = {theme.slug: [] for theme in order}
    if wanted is None:
        buckets[None] = []
    late = 0
    for post in sorted(posts, key=lambda p: (p.published, p.guid), reverse=True):
        # Never after the window's end (an edition's post re-dated since is unpublished, as the feeds see it).
        if post.published > until or (post.published <= since and not with_late):
            continue
        if reading is not None and reading.choice == "only" and not reading.reads(post.language):
            continue
        own = [slug for slug in post.themes if slug in buckets]
        if own:
            first = min(own, key=lambda slug: order.index(by_slug[slug]))
            others = tuple(theme for theme in order if theme.slug in own and theme.slug != first)
            buckets[first].append(DigestItem(post, others))
        elif wanted is None and not any(slug in by_slug for slug in post.themes):
            buckets[None].append(DigestItem(post))
        else:
            continue
        if post.published <= since:
            late += 1
    sections = []
    for key, items in buckets.items():
        if not items:
            continue
        if reading is not None and reading.choice == "first":
            items.sort(key=lambda item: not reading.reads(item.post.language))  # stable: newest first in each part
        shown = items if section_cap is None else items[:section_cap]
        sections.append(Section(by_slug[key] if key is not None else None, tuple(shown), len(items) - len(shown)))
    if not sections:
        return None
    return Digest(since, until, tuple(sections), wanted, late, reading)


def with_cap(digest: Digest, section_cap: int) -> Digest:
    """The same digest with at most ``section_cap`` posts shown per section (to stay under a size limit)."""
    sections = tuple(
        Section(s.theme, s.items[:section_cap], s.more + max(0, len(s.items) - section_cap)) for s in digest.sections
    )
    return Digest(digest.since, digest.until, sections, digest.followed, digest.late, digest.reading)


def with_shown(digest: Digest, count: int) -> Digest:
    """The same digest showing ``count`` of its shown posts (at least one per section), the rest behind each
    section's "N more" link: the sections take turns, so the first posts of every section are kept before any
    section's later ones (a section's ``k``-th post before any ``k+1``-th; at a tie, in the order of sections)."""
    sizes = [len(section.items) for section in digest.sections]
    keep = [min(1, size) for size in sizes]
    left = max(0, count - sum(keep))
    depth = 1
    while left > 0 and any(size > depth for size in sizes):
        for index, size in enumerate(sizes):
            if left > 0 and size > depth:
                keep[index] += 1
                left -= 1
        depth += 1
    sections = tuple(
        Section(s.theme, s.items[:kept], s.more + len(s.items) - kept)
        for s, kept in zip(digest.sections, keep, strict=True)
    )
    return Digest(digest.since, digest.until, sections, digest.followed, digest.late, digest.reading)
