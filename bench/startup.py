"""How long commands take to start: ``syndication --help``, ``posts list --limit 1`` and a ``feeds build`` with
nothing to do, beside ``python -c pass`` and ``python -c "import sqlalchemy.orm"``, each a new process.

A small store is prepared first (200 generated posts, their feeds built once, so the timed build is a no-op). Then
the five commands run in rounds, each round in a shuffled order, so that a noisy stretch of this shared machine
hits them all alike; the figures are medians of wall time over the rounds. The children write bytecode caches
(``PYTHONDONTWRITEBYTECODE`` is dropped, as an installed package has its ``.pyc`` files) and one untimed round
warms them.

Goals (issue 20): ``--help`` within 0.1 s of ``python -c pass``; ``posts list --limit 1`` and the no-op build
within 0.3 s of importing SQLAlchemy's ORM.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.generate import bench_themes_toml, write_posts
from bench.records import record

HELP_GOAL = 0.1  # seconds over `python -c pass`
COMMAND_GOAL = 0.3  # seconds over `python -c "import sqlalchemy.orm"`
POSTS = 200


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=21, help="timed rounds (each runs every command once)")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        env = prepared_store(Path(folder))
        commands = timed_commands()
        for argv_ in commands.values():  # warm-up: bytecode caches, and each command checked once
            run(argv_, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        order = list(commands)
        shuffler = random.Random(20)
        for _ in range(args.runs):
            shuffler.shuffle(order)
            for name in order:
                started = time.perf_counter()
                run(commands[name], env)
                times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    help_over = median["help"] - median["pass"]
    posts_over = median["posts"] - median["orm"]
    build_over = median["build"] - median["orm"]
    verdicts = [
        "PASS" if help_over <= HELP_GOAL else "FAIL",
        "PASS" if posts_over <= COMMAND_GOAL else "FAIL",
        "PASS" if build_over <= COMMAND_GOAL else "FAIL",
    ]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines = [
        f"- medians of wall time over {args.runs} interleaved rounds, each command a new process; "
        f"store: {POSTS} posts, feeds built once before; load average {load} on {os.cpu_count()} cores",
        f'- `python -c pass`: {ms(median["pass"])}; `python -c "import sqlalchemy.orm"`: {ms(median["orm"])}',
        f"- `syndication --help`: {ms(median['help'])}, {ms(help_over)} over `python -c pass` "
        f"(goal <= {ms(HELP_GOAL)}): {verdicts[0]}",
        f"- `syndication posts list --limit 1`: {ms(median['posts'])}, {ms(posts_over)} over importing the ORM "
        f"(goal <= {ms(COMMAND_GOAL)}): {verdicts[1]}",
        f"- `syndication feeds build`, nothing to do: {ms(median['build'])}, {ms(build_over)} over importing the "
        f"ORM (goal <= {ms(COMMAND_GOAL)}): {verdicts[2]}",
    ]
    print("\n".join(lines))
    if args.record:
        record("Command start-up (issue 20)", lines)
    return 0 if verdicts == ["PASS"] * 3 else 1


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def timed_commands() -> dict[str, list[str]]:
    """The five command lines, by name; ``syndication`` is the installed script beside this interpreter."""
    script = Path(sys.executable).with_name("syndication")
    syndication = [str(script)] if script.exists() else [sys.executable, "-m", "syndication"]
    return {
        "pass": [sys.executable, "-c", "pass"],
        "orm": [sys.executable, "-c", "import sqlalchemy.orm"],
        "help": [*syndication, "--help"],
        "posts": [*syndication, "posts", "list", "--limit", "1"],
        "build": [*syndication, "feeds", "build"],
    }


def prepared_store(work: Path) -> dict[str, str]:
    """A configuration and store in ``work`` with generated posts and their feeds built; the environment that
    points the commands at it."""
    config = work / "config.toml"
    config.write_text(
        f'[site]\ntitle = "News Example"\nbase_url = "https://news.example.org"\n'
        f'[database]\nurl = "sqlite:///{work / "store.db"}"\n'
        f'[feeds]\noutput_dir = "{work / "feeds"}"\n'
        f'[mail]\nfrom_address = "digest@news.example.org"\n'
        f"{bench_themes_toml()}",
        "utf-8",
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("SYNDICATION_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["SYNDICATION_CONFIG"] = str(config)
    syndication = [sys.executable, "-m", "syndication"]
    run([*syndication, "init"], env)
    run([*syndication, "import", str(write_posts(work / "posts.jsonl", POSTS))], env)
    run([*syndication, "feeds", "build"], env)
    again = run([*syndication, "feeds", "build"], env)
    assert " 0 documents written" in again, again
    return env


def run(argv: list[str], env: dict[str, str]) -> str:
    """Run ``argv``; its output, or an error with it if it failed."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


if __name__ == "__main__":
    raise SystemExit(main())
