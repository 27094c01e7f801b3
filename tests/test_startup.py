"""Commands import what they need when they need it (issue 20): ``--help`` builds the parser without the
libraries the commands use, and a command that does little imports none of what it does not do (templates, mail
rendering, migrations, HTTP). ``python -m bench.startup`` measures the time; this guards the imports, which is
what the time follows, without timing anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service
from tests.support import post_record

# Runs the command line as `syndication ARGS...` does, then writes the modules it imported to FILE.
_PROBE = """
import json, sys
from syndication.cli import main
try:
    status = main(sys.argv[2:])
except SystemExit as stop:
    status = stop.code
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"status": status, "modules": sorted(sys.modules)}, out)
"""
# What the commands use that takes long to import.
HEAVY = {"sqlalchemy", "pydantic", "alembic", "jinja2", "premailer", "feedgen", "lxml", "httpx", "email_validator"}


def imported_by(tmp_path: Path, *args: str) -> set[str]:
    """The modules a new process imported running ``syndication args...`` (which must exit 0)."""
    out = tmp_path / "modules.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNDICATION_")}
    subprocess.run([sys.executable, "-c", _PROBE, str(out), *args], env=env, check=True, cwd=tmp_path)
    found = json.loads(out.read_text(encoding="utf-8"))
    assert found["status"] in (0, None), found["status"]
    return set(found["modules"])


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("args", [["--help"], ["posts", "--help"], ["feeds", "build", "--help"], ["--version"]])
def test_help_imports_none_of_the_libraries_the_commands_use(tmp_path: Path, args: list[str]) -> None:
    assert packages(imported_by(tmp_path, *args)) & HEAVY == set()


def test_posts_list_imports_no_templates_migrations_or_http(
    tmp_path: Path, service: Service, config_path: Path
) -> None:
    modules = imported_by(tmp_path, "--config", str(config_path), "posts", "list", "--limit", "1")
    assert {"sqlalchemy", "pydantic"} <= packages(modules)  # the probe saw the command run
    assert packages(modules) & (HEAVY - {"sqlalchemy", "pydantic"}) == set()
    assert not {name for name in modules if name.startswith(("syndication.mailing.render", "syndication.app.digests"))}


def test_a_feed_build_with_nothing_to_do_imports_no_mail_migrations_or_http(
    tmp_path: Path, service: Service, config_path: Path
) -> None:
    posts = tmp_path / "posts.jsonl"
    posts.write_text("".join(json.dumps(post_record(number)) + "\n" for number in range(3)), encoding="utf-8")
    import_file(service, posts)
    out = tmp_path / "feeds"
    # Built by the clock the command reads: a build more than DEPARTURES_KEPT after the last takes the whole way.
    publish_feeds(Service(service.settings, service.engine), out)
    modules = imported_by(tmp_path, "--config", str(config_path), "feeds", "build", "--out", str(out))
    assert "syndication.feeds.build" in modules  # the probe saw the command run
    assert packages(modules) & {"alembic", "premailer", "httpx", "pygments", "rich", "email_validator"} == set()
    assert not {name for name in modules if name.startswith(("syndication.mailing.render", "syndication.app.editions"))}
    # Nothing changed, so nothing is written, named or worded: no feed writers (feedgen, lxml and what the dev
    # extra hangs on it), no templates, no catalog compiled, no worker process, no sources or sending side.
    assert packages(modules) & {"feedgen", "lxml", "rnc2rng", "jinja2", "multiprocessing", "nh3", "slugify"} == set()
    assert not {name for name in modules if name.startswith(("babel.messages", "syndication.feeds.rss_atom",
                                                            "syndication.feeds.directory", "syndication.delivery",
                                                            "syndication.sources"))}  # fmt: skip
