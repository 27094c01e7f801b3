"""Generated content for benchmarks: many posts with themes, regions and authors, deterministic by seed."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

THEMES = [
    "climate-action", "resilience", "circular-economy", "nature-based",
    "equitable-development", "sustainable-mobility", "sustainable-procurement", "climate-finance",
]  # fmt: skip
REGIONS = ["africa", "east-asia", "south-asia", "southeast-asia-oceania", "europe", "latin-america", "north-america"]
PLACES = ["Malmö", "São Paulo", "北九州市", "Kraków", "Bogotá", "Nairobi", "Seoul", "Hobart", "Karachi"]
WORDS = [
    "local",
    "regional",
    "governments",
    "climate",
    "action",
    "resilience",
    "circular",
    "economy",
    "plastics",
    "procurement",
    "mobility",
    "nature",
    "biodiversity",
    "finance",
    "data",
    "cities",
    "towns",
    "emissions",
    "adaptation",
    "energy",
    "waste",
    "transport",
    "network",
]


def bench_themes_toml() -> str:
    """The [[themes]] and [[regions]] tables matching the generated slugs."""
    parts = [f'[[themes]]\nslug = "{slug}"\nname = "{slug.replace("-", " ").title()}"\n' for slug in THEMES]
    parts += [f'[[regions]]\nslug = "{slug}"\nname = "{slug.replace("-", " ").title()}"\n' for slug in REGIONS]
    return "\n".join(parts)


def write_posts(path: Path, count: int, *, authors: int = 500, seed: int = 7) -> Path:
    """Write ``count`` JSON Lines posts (about 1.5 KB each) published over the last ``count`` hours."""
    rng = random.Random(seed)
    names = [f"Author {i} {rng.choice(PLACES)}" for i in range(authors)]
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(count):
            place = rng.choice(PLACES)
            body = " ".join(rng.choice(WORDS) for _ in range(120))
            record = {
                "guid": f"urn:bench:{number}",
                "title": f"{place}: {' '.join(rng.choice(WORDS) for _ in range(6))} #{number}",
                "url": f"https://news.example.org/{number}/",
                "content_html": (
                    f'<p>{body[:400]} <a href="/related/{number}">related</a></p>'
                    f'<h2>{place}</h2><p onclick="x()">{body[400:]}</p><img src="img/{number}.jpg" alt="{place}">'
                ),
                "authors": rng.sample(names, rng.choice((1, 1, 2, 3))),
                "published": (start + timedelta(hours=number)).isoformat(),
                "themes": rng.sample(THEMES, rng.choice((1, 1, 2, 3))),
                "regions": rng.sample(REGIONS, rng.choice((0, 1, 1, 2))),
                "language": rng.choice(("en", "en", "en", "es", "pt", "ja")),
                "image": {"url": f"https://cdn.example.org/{number}.jpg", "alt": place},
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
