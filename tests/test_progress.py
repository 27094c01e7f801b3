"""Progress of long commands: the use cases tell a ``core.progress.Progress`` what they do, the command line shows
it (a tqdm bar on a terminal, a plain line every ``--progress-every`` seconds otherwise, a summary at the end) and
``--quiet`` shows none of it.

The commands run here with standard error captured (not a terminal) and ``--progress-every 0``, so every item
prints its line; each line is parsed for its count and total. The rate and ETA arithmetic is checked on a fake
clock: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from syndication.cli import main
from syndication.cli.progress import BarProgress, LineProgress, duration
from syndication.core.progress import SILENT, Meter, running
from tests.smtp_server import smtp_server
from tests.support import post_record, write_config, write_jsonl

INBOUND = Path(__file__).parent / "inbound"
# "import posts.jsonl: 3/20 (15%), 120.5/s, ETA 0.1s"; a task without a total: "gather x: 3, 120.5/s"
LINE = re.compile(
    r"^(?P<what>[^:]+): (?P<done>\d+)(?:/(?P<total>\d+) \((?P<percent>\d+)%\))?, (?:[\d.]+|-)/s(?:, ETA \S+)?$"
)
SUMMARY = re.compile(r"^(?P<what>[^:]+): (?P<done>\d+)(?:/(?P<total>\d+))? done in \S+(?:, [\d.]+/s)?$")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(err: str, what: str) -> tuple[list[tuple[int, int | None]], tuple[int, int | None]]:
    """The (done, total) of each progress line of task ``what`` in ``err``, and of its one summary line."""
    lines, summaries = [], []
    for text in err.splitlines():
        if (line := LINE.match(text)) and line["what"] == what:
            lines.append((int(line["done"]), int(line["total"]) if line["total"] else None))
        elif (summary := SUMMARY.match(text)) and summary["what"] == what:
            summaries.append((int(summary["done"]), int(summary["total"]) if summary["total"] else None))
    assert len(summaries) == 1, f"one summary of {what!r} expected in:\n{err}"
    return lines, summaries[0]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[feeds]\noutput_dir = "feeds"\n')
    assert main(["--config", str(path), "--quiet", "init"]) == 0
    return path


def test_the_meter_computes_rate_and_eta_from_the_moments_given() -> None:
    meter = Meter("feeds", 400, started=10.0)
    assert (meter.rate(10.0), meter.eta(10.0), meter.fraction()) == (None, None, 0.0)  # nothing done yet
    meter.done = 100
    assert meter.rate(30.0) == 5.0  # 100 in 20 s
    assert meter.eta(30.0) == 60.0  # 300 left at 5/s
    assert meter.fraction() == 0.25
    meter.done = 400
    assert (meter.eta(90.0), meter.fraction()) == (0.0, 1.0)
    unknown = Meter("gather", None, started=0.0, done=50)
    assert (unknown.rate(10.0), unknown.eta(10.0), unknown.fraction()) == (5.0, None, None)
    assert Meter("empty", 0, started=0.0).fraction() == 1.0


def test_plain_lines_come_every_interval_with_rate_and_eta_then_a_summary() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = LineProgress(stream, interval=5.0, clock=clock)
    progress.begin("feed build", 100)
    for _ in range(10):  # 4 items a second: no line before 5 s
        clock.now += 0.25
        progress.advance()
    clock.now += 2.5
    progress.advance(10)  # 5 s after the start: 20 done, 4/s, 80 left: 20 s
    clock.now += 1.0
    progress.advance(30)  # 1 s later: no line
    clock.now += 4.0
    progress.advance(10)  # 10 s: 60 done, 6/s, 40 left
    clock.now += 2.0
    progress.advance(40)
    progress.end()
    progress.end()  # once ended, nothing more
    assert stream.getvalue().splitlines() == [
        "feed build: 20/100 (20%), 4.0/s, ETA 20s",
        "feed build: 60/100 (60%), 6.0/s, ETA 6.7s",
        "feed build: 100/100 done in 12s, 8.3/s",
    ]


def test_a_task_without_a_total_shows_its_count_and_rate() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = LineProgress(stream, interval=0, clock=clock)
    progress.begin("gather city-news", None)
    clock.now += 2.0
    progress.advance(3)
    progress.begin("gather other", None)  # a new task ends the one before
    progress.end()  # it showed no line: no summary either
    assert stream.getvalue().splitlines() == ["gather city-news: 3, 1.5/s", "gather city-news: 3 done in 2.0s, 1.5/s"]


def test_work_done_within_the_interval_shows_nothing_and_an_error_says_where_it_stopped() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = LineProgress(stream, interval=5.0, clock=clock)
    with running(progress, "import a.jsonl", 10) as shows:
        clock.now += 1.0
        shows.advance(10)
    assert stream.getvalue() == ""  # the command's own report says what it did
    with pytest.raises(RuntimeError), running(progress, "feed build", 40) as shows:
        clock.now += 6.0
        shows.advance(13)
        raise RuntimeError("disk full")
    assert stream.getvalue().splitlines() == [
        "feed build: 13/40 (32%), 2.2/s, ETA 12s",
        "feed build: stopped at 13/40 after 6.0s",
    ]


def test_durations_are_short() -> None:
    assert [duration(s) for s in (0.04, 4.25, 42, 185, 7380)] == ["0.0s", "4.2s", "42s", "3m05s", "2h03m"]


def test_on_a_terminal_a_tqdm_bar_shows_the_total_then_the_summary() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = BarProgress(stream, clock=clock)
    progress.begin("sending", 3)
    for _ in range(3):
        clock.now += 1.0
        progress.advance()
    progress.end()
    output = stream.getvalue()
    assert "sending" in output and "3/3" in output  # tqdm's bar: count and total
    assert output.endswith("sending: 3/3 done in 3.0s, 1.0/s\n")


def test_silent_progress_does_nothing() -> None:
    SILENT.begin("x", 1)
    SILENT.advance(5)
    SILENT.end()


def test_import_and_feeds_build_show_progress_lines_and_a_summary(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    posts = write_jsonl(tmp_path / "posts.jsonl", [post_record(n) for n in range(1, 21)] + ["", "{not json"])
    capsys.readouterr()
    assert main(["--config", str(config), "import", str(posts), "--progress-every", "0"]) == 1  # one line refused
    captured = capsys.readouterr()
    assert "posts.jsonl: 20 read, 20 added, 0 updated, 0 unchanged, 1 rejected" in captured.out  # as before
    lines, summary = _progress(captured.err, "import posts.jsonl")
    assert [done for done, _ in lines] == list(range(1, 22))  # 20 posts and the refused line; the blank is none
    assert {total for _, total in lines} == {21}
    assert summary == (21, 21)

    assert main(["--config", str(config), "feeds", "build", "--full", "--progress-every", "0"]) == 0
    captured = capsys.readouterr()
    built = re.search(r"full build of (\d+) feeds", captured.out)
    assert built, captured.out
    feeds = int(built[1])
    lines, summary = _progress(captured.err, "feed build")
    assert lines == [(n, feeds) for n in range(1, feeds + 1)]
    assert summary == (feeds, feeds)


def test_subscribers_bounces_and_sending_show_their_totals(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = [post_record(n, published=f"2024-05-2{n}T10:00:00Z") for n in range(1, 4)]
    assert main(["--config", str(config), "-q", "import", str(write_jsonl(tmp_path / "p.jsonl", records))]) == 0
    csv = tmp_path / "people.csv"
    csv.write_text("email,name,cadence\n" + "".join(f"p{n}@example.org,P {n},weekly\n" for n in range(4)), "utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "subscribers", "import", str(csv), "--confirmed",
                 "--progress-every", "0"]) == 0  # fmt: skip
    lines, summary = _progress(capsys.readouterr().err, "import people.csv")
    assert lines == [(n, 4) for n in range(1, 5)] and summary == (4, 4)

    messages = tmp_path / "messages"
    messages.mkdir()
    for name in ("exim-dsn.eml", "gmail-dsn.eml", "out-of-office.eml"):
        shutil.copy(INBOUND / name, messages / name)
    assert main(["--config", str(config), "bounces", "import", str(messages), "--progress-every", "0"]) == 0
    lines, summary = _progress(capsys.readouterr().err, "messages")
    assert lines == [(3, 3)] and summary == (3, 3)  # processed a batch at a time

    with smtp_server() as server:
        monkeypatch.setenv("SYNDICATION_SMTP__HOST", "127.0.0.1")
        monkeypatch.setenv("SYNDICATION_SMTP__PORT", str(server.port))
        window = ["--since", "2024-05-20T00:00:00Z", "--until", "2024-06-01T00:00:00Z"]
        assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window,
                     "--progress-every", "0"]) == 0  # fmt: skip
        captured = capsys.readouterr()
        assert "4 sent" in captured.out
        lines, summary = _progress(captured.err, "sending")
        assert lines and lines[-1] == (4, 4) and all(total == 4 for _, total in lines)
        assert summary == (4, 4)
        assert server.accepted == 4


def test_quiet_shows_no_progress(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    posts = write_jsonl(tmp_path / "posts.jsonl", [post_record(n) for n in range(1, 6)])
    capsys.readouterr()
    assert main(["--config", str(config), "import", str(posts), "--quiet", "--progress-every", "0"]) == 0
    assert main(["--config", str(config), "-q", "feeds", "build", "--progress-every", "0"]) == 0
    captured = capsys.readouterr()
    assert "5 added" in captured.out and "feeds:" in captured.out  # the commands' own summaries stay
    assert captured.err == ""
