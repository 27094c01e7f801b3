"""Gathering JSON Lines through the real command line into the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from syndication.app.gathering import _pull_into_store, list_posts
from syndication.app.service import Service, init_store
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.core.models import Post
from syndication.errors import SourceError
from syndication.sources.base import CursorMoved, PullEvent
from syndication.store import database
from tests.support import NOW, post_record, write_config, write_jsonl

ROOT = Path(__file__).resolve().parent.parent


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def exported(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert run(config, "posts", "list", "--json", *args) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.fixture
def initialised(config_path: Path) -> Path:
    assert run(config_path, "init") == 0
    return config_path


def test_init_twice_is_harmless(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "init") == 0
    assert run(config_path, "init") == 0
    assert f"schema {database.head_revision()}" in capsys.readouterr().out


def test_commands_refuse_an_uninitialised_store(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config_path, "posts", "list") == 1
    assert "not initialised: run 'syndication init'" in capsys.readouterr().err


def test_sample_content_imports_lists_and_reimports_nothing(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = ROOT / "examples" / "posts.jsonl"
    lines = [line for line in sample.read_text(encoding="utf-8").splitlines() if line.strip()]
    config = write_config(initialised.parent, _database(initialised), themes=_shipped_themes())
    assert run(config, "import", str(sample)) == 0
    first = capsys.readouterr()
    assert f"{len(lines)} read, {len(lines)} added" in first.out
    assert "rejected" not in first.err
    assert len(exported(config, capsys)) == len(lines)
    assert run(config, "import", str(sample)) == 0
    assert f"0 added, 0 updated, {len(lines)} unchanged" in capsys.readouterr().out


def _database(config: Path) -> str:
    return str(load_settings(config, environ={}).database.url)


def _shipped_themes() -> str:
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    start = text.index("[[themes]]")
    return text[start : text.index("[smtp]")]


def test_bad_lines_are_reported_and_good_ones_kept(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            post_record(1),
            post_record(2, title=None),
            '{"title": "broken",',
            "[1, 2, 3]",
            post_record(5, url="not-a-url"),
            post_record(6, published="yesterday-ish"),
            post_record(7, published=None),
            "",
            post_record(9, title=42),
            post_record(10),
        ],
    )
    assert run(initialised, "import", str(source)) == 1
    captured = capsys.readouterr()
    assert "2 added" in captured.out and "7 rejected" in captured.out
    expected = [
        "line 2: missing title",
        "line 3: malformed JSON",
        "line 4: not a JSON object (got list)",
        "line 5: invalid URL 'not-a-url'",
        "line 6: unparseable published date 'yesterday-ish'",
        "line 7: missing published date",
        "line 9: title must be a string",
    ]
    for message in expected:
        assert message in captured.err
    assert "line 8" not in captured.err  # a blank line is not an item
    assert [row["guid"] for row in exported(initialised, capsys)] == ["urn:test:post:10", "urn:test:post:1"]


def test_invalid_utf8_line_is_refused_alone(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bytes.jsonl"
    path.write_bytes(
        json.dumps(post_record(1)).encode()
        + b"\n"
        + b'{"title": "\xff\xfe"}\n'
        + json.dumps(post_record(3)).encode()
        + b"\n"
    )
    assert run(initialised, "import", str(path)) == 1
    assert "line 2: not valid UTF-8" in capsys.readouterr().err
    assert len(exported(initialised, capsys)) == 2


def test_newer_updated_replaces_in_place_and_older_is_ignored(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = post_record(1, themes=["climate-action"], authors=["Ana Pérez"])
    write_jsonl(tmp_path / "a.jsonl", [original])
    assert run(initialised, "import", str(tmp_path / "a.jsonl")) == 0
    edited = post_record(
        1,
        title="Edited title",
        updated="2024-05-20T00:00:00Z",
        themes=["resilience"],
        authors=["Bo Li", "Ana Pérez"],
    )
    stale = post_record(1, title="Stale title", updated="2024-05-03T00:00:00Z")
    write_jsonl(tmp_path / "b.jsonl", [edited])
    write_jsonl(tmp_path / "c.jsonl", [stale])
    capsys.readouterr()
    assert run(initialised, "import", str(tmp_path / "b.jsonl")) == 0
    assert "1 updated" in capsys.readouterr().out
    assert run(initialised, "import", str(tmp_path / "c.jsonl")) == 0
    assert "1 unchanged" in capsys.readouterr().out
    [row] = exported(initialised, capsys)
    assert row["title"] == "Edited title"
    assert row["themes"] == ["resilience"]
    assert row["authors"] == ["Bo Li", "Ana Pérez"]
    assert row["updated"] == "2024-05-20T00:00:00Z"
    assert exported(initialised, capsys, "--theme", "climate-action") == []


HOSTILE_CONTENT = (
    '<p onclick="steal()">Read <a href="/about">about us</a> and <a href="javascript:alert(1)">this</a>'
    '<script>alert("x")</script><style>p{}</style><iframe src="https://evil.example"></iframe>'
    '<img src="../img/cover.png" onerror="x()" alt="Cover"></p>'
)


def test_content_is_made_safe_at_the_door(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = post_record(
        1,
        url="https://news.example.org/posts/2024/one",
        title="Line\r\nbreak\u2028and\x00 control\x0b chars",
        content_html=HOSTILE_CONTENT,
        authors=["Ana\nPérez", "  "],
        summary=None,
        image={"url": "/img/lead.jpg", "alt": "Lead\nimage"},
    )
    write_jsonl(tmp_path / "hostile.jsonl", [record])
    assert run(initialised, "import", str(tmp_path / "hostile.jsonl")) == 0
    [row] = exported(initialised, capsys)
    html = row["content_html"]
    for forbidden in ("script", "style", "iframe", "onclick", "onerror", "javascript:", "alert"):
        assert forbidden not in html
    assert 'href="https://news.example.org/about"' in html
    assert 'src="https://news.example.org/posts/img/cover.png"' in html
    assert row["title"] == "Line break and control chars"
    assert row["authors"] == ["Ana Pérez"]
    assert row["summary"] == "Read about us and this"
    assert row["image"] == {"url": "https://news.example.org/img/lead.jpg", "alt": "Lead image"}


def test_long_content_gets_a_summary_cut_at_a_word(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = [f"word{i}" for i in range(120)]
    write_jsonl(tmp_path / "long.jsonl", [post_record(1, content_html="<p>" + " ".join(words) + "</p>")])
    assert run(initialised, "import", str(tmp_path / "long.jsonl")) == 0
    [row] = exported(initialised, capsys)
    assert row["summary"] == " ".join(words[:50]) + "…"


def test_time_without_offset_is_utc_with_a_warning(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        tmp_path / "naive.jsonl",
        [
            post_record(1, published="2024-05-02T08:30:00"),
            post_record(2, published="2024-05-02T08:30:00+02:00"),
        ],
    )
    assert run(initialised, "import", str(tmp_path / "naive.jsonl")) == 0
    err = capsys.readouterr().err
    assert "line 1: published '2024-05-02T08:30:00' has no time zone offset; taken as UTC" in err
    assert "line 2" not in err
    published = {row["guid"]: row["published"] for row in exported(initialised, capsys)}
    assert published == {"urn:test:post:1": "2024-05-02T08:30:00Z", "urn:test:post:2": "2024-05-02T06:30:00Z"}


def test_unknown_theme_is_reported_and_ignored_post_kept(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        tmp_path / "t.jsonl",
        [post_record(1, themes=["astrology", "Climate", "plastics"]), post_record(2, themes=["astrology"])],
    )
    assert run(initialised, "import", str(tmp_path / "t.jsonl")) == 0
    assert "unknown theme 'astrology' ignored" in capsys.readouterr().err
    rows = {row["guid"]: row["themes"] for row in exported(initialised, capsys)}
    assert rows == {"urn:test:post:1": ["climate-action", "circular-economy"], "urn:test:post:2": []}


def test_future_post_is_stored_but_not_published_until_its_time(settings: Any, tmp_path: Path) -> None:
    init_store(settings)
    write_jsonl(tmp_path / "f.jsonl", [post_record(1), post_record(2, published="2024-07-01T00:00:00Z")])
    before = Service.open(settings, fixed_clock(NOW))
    from syndication.app.gathering import import_file

    report = import_file(before, tmp_path / "f.jsonl")
    assert report.added == 2
    assert any("dated in the future" in str(w) for w in report.warnings)
    assert [p.guid for p in list_posts(before)] == ["urn:test:post:1"]
    after = Service.open(settings, fixed_clock(NOW.replace(month=7, day=2)))
    assert [p.guid for p in list_posts(after)] == ["urn:test:post:2", "urn:test:post:1"]
    before.engine.dispose()
    after.engine.dispose()


def test_export_reimports_to_the_same_store(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        post_record(
            i,
            image={"url": f"https://cdn.example.org/{i}.jpg", "alt": f"Photo {i}"},
            title=f"Malmö, São Paulo & 北九州市 <{i}> 🌍",
            regions=["europe", "latin-america"],
        )
        for i in range(1, 6)
    ]
    write_jsonl(tmp_path / "in.jsonl", records)
    assert run(initialised, "import", str(tmp_path / "in.jsonl")) == 0
    first = exported(initialised, capsys)
    dump = tmp_path / "export.jsonl"
    write_jsonl(dump, first)
    (tmp_path / "other").mkdir()
    other = write_config(tmp_path / "other", f"sqlite:///{tmp_path / 'other.db'}")
    assert run(other, "init") == 0
    assert run(other, "import", str(dump)) == 0
    assert exported(other, capsys) == first
    assert first[0]["title"] == "Malmö, São Paulo & 北九州市 <5> 🌍"


def test_gather_reads_only_what_is_new(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    feed = tmp_path / "news.jsonl"
    config = write_config(tmp_path, database_url, f'[[sources]]\nname = "news"\nkind = "jsonl"\npath = "{feed.name}"\n')
    write_jsonl(feed, [post_record(1), post_record(2)])
    assert run(config, "init") == 0
    assert run(config, "gather") == 0
    assert "news: 2 read, 2 added" in capsys.readouterr().out
    assert run(config, "gather", "--source", "news") == 0
    assert "news: 0 read" in capsys.readouterr().out
    with feed.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(post_record(3)) + "\n" + json.dumps(post_record(4))[:20])  # last line unfinished
    assert run(config, "gather") == 0
    captured = capsys.readouterr()
    assert "news: 1 read, 1 added" in captured.out
    assert "line 4: incomplete last line left for the next pull" in captured.err
    with feed.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(post_record(4))[20:] + "\n")
    assert run(config, "gather") == 0
    assert "news: 1 read, 1 added" in capsys.readouterr().out
    write_jsonl(feed, [post_record(9, title="A replaced file is read again from its start")])
    assert run(config, "gather") == 0
    assert "news: 1 read, 1 added" in capsys.readouterr().out
    assert len(exported(config, capsys)) == 5


def test_unknown_source_and_missing_file(tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path, database_url, '[[sources]]\nname = "gone"\nkind = "jsonl"\npath = "missing.jsonl"\n'
    )
    assert run(config, "init") == 0
    assert run(config, "gather", "--source", "nope") == 2
    assert "no source named 'nope' (known: gone)" in capsys.readouterr().err
    assert run(config, "gather") == 1
    assert "missing.jsonl: cannot be read" in capsys.readouterr().err


class _FailingSource:
    """A real source that delivers some posts and then loses its connection."""

    name = "flaky"

    def __init__(self, good: int) -> None:
        self.good = good

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        from syndication.sources.normalise import Vocabulary, build_post

        vocabulary = Vocabulary(themes=())
        for number in range(self.good):
            yield build_post(post_record(number), f"item {number}", vocabulary).post
        if self.good >= 0:  # always: the pull fails before its cursor, as a dropped connection would
            raise SourceError("connection reset by peer")
        yield CursorMoved({"never": True})


def test_failing_pull_keeps_stored_batches_and_does_not_move_the_cursor(service: Service) -> None:
    from syndication.store import cursors, database

    batch = service.settings.gather.batch_size
    report = _pull_into_store(service, _FailingSource(good=batch + 5))
    assert report.failure == "connection reset by peer"
    stored = list_posts(service)
    assert batch <= len(stored) <= batch + 5
    assert all(isinstance(p, Post) for p in stored)
    with database.transaction(service.engine) as session:
        assert cursors.load_cursor(session, "flaky") == {}


def test_large_files_parse_in_a_worker_with_the_same_result(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from syndication.sources import jsonl

    records: list[dict[str, Any] | str] = [post_record(i) for i in range(1, 1300)]
    records[10] = "{broken"
    records[700] = post_record(701, url="relative/path")
    source = write_jsonl(tmp_path / "big.jsonl", records)
    monkeypatch.setattr(jsonl, "PARALLEL_FROM_BYTES", 0)  # treat this file as large
    assert run(initialised, "import", str(source)) == 1
    captured = capsys.readouterr()
    assert "1297 read, 1297 added" in captured.out and "2 rejected" in captured.out
    assert "line 11: malformed JSON" in captured.err
    assert "line 701: invalid URL 'relative/path'" in captured.err
    assert len(exported(initialised, capsys)) == 1297


def _line(number: int, **overrides: Any) -> bytes:
    return json.dumps(post_record(number, **overrides)).encode()


def test_unended_last_line_of_an_imported_file_is_read_like_the_others(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_last = tmp_path / "bad_last.jsonl"
    bad_last.write_bytes(_line(1) + b"\n" + _line(2) + b'\n{"title": 5}')
    good_last = tmp_path / "good_last.jsonl"
    good_last.write_bytes(_line(3) + b"\n" + _line(4))
    assert run(initialised, "import", str(bad_last)) == 1  # nothing will be appended: no next pull to wait for
    captured = capsys.readouterr()
    assert "2 added" in captured.out and "1 rejected" in captured.out
    assert "line 3: title must be a string" in captured.err
    assert "incomplete" not in captured.err
    assert run(initialised, "import", str(good_last)) == 0
    assert "2 read, 2 added" in capsys.readouterr().out
    assert len(exported(initialised, capsys)) == 4


def test_cr_lf_and_crlf_all_end_a_line(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from syndication.sources import jsonl

    cr_only = tmp_path / "cr.jsonl"
    cr_only.write_bytes(_line(1) + b"\r" + _line(2) + b"\r")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(_line(3) + b"\r\n" + _line(4) + b"\n\r\n{broken\r" + _line(5) + b"\r\n")
    # Read in one block, then in blocks that part the first CRLF, then in tiny blocks.
    for block_bytes in (1024 * 1024, len(_line(3)) + 1, 7):
        monkeypatch.setattr(jsonl, "_BLOCK_BYTES", block_bytes)
        assert run(initialised, "import", str(cr_only)) == 0
        captured = capsys.readouterr()
        assert "2 read" in captured.out and "incomplete" not in captured.err
        assert run(initialised, "import", str(mixed)) == 1
        captured = capsys.readouterr()
        assert "3 read" in captured.out and "1 rejected" in captured.out
        assert "line 4: malformed JSON" in captured.err  # line 3 is the blank one between the LF and the CRLF
    assert len(exported(initialised, capsys)) == 5


def test_gather_resumes_after_a_crlf_written_in_two_parts(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = tmp_path / "news.jsonl"
    config = write_config(tmp_path, database_url, f'[[sources]]\nname = "news"\nkind = "jsonl"\npath = "{feed.name}"\n')
    feed.write_bytes(_line(1) + b"\r")  # the writer has written the CR of its CRLF, not yet the LF
    assert run(config, "init") == 0
    assert run(config, "gather") == 0
    assert "news: 1 read, 1 added" in capsys.readouterr().out
    with feed.open("ab") as handle:
        handle.write(b"\n" + _line(2) + b"\r\n{broken\r\n")
    assert run(config, "gather") == 1
    captured = capsys.readouterr()
    assert "news: 1 read, 1 added" in captured.out
    assert "line 3: malformed JSON" in captured.err  # the late LF ended line 1: it is not a line of its own


def test_only_a_regular_file_is_imported(initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    pipe = tmp_path / "pipe.jsonl"
    os.mkfifo(pipe)  # no writer: opening it must not wait for one
    for path in ("/dev/zero", str(tmp_path), str(pipe)):
        assert run(initialised, "import", path) == 1
        assert f"{path}: cannot be read: not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("parallel", [False, True])
def test_an_over_long_line_is_refused_without_losing_the_next(
    initialised: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    parallel: bool,
) -> None:
    from syndication.sources import jsonl

    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(jsonl, "_BLOCK_BYTES", 256)  # the long line spans many reads, as a 50 MB one would
    if parallel:
        monkeypatch.setattr(jsonl, "PARALLEL_FROM_BYTES", 0)
    source = tmp_path / "long.jsonl"
    source.write_bytes(
        _line(1)
        + b"\n"
        + _line(2, content_html="x" * 5000)
        + b"\r\n"
        + _line(3, content_html="y" * (1000 - len(_line(3, content_html=""))))  # exactly at the cap
        + b"\n"
        + _line(4, content_html="z" * 5000)  # over-long and unended
    )
    assert run(initialised, "import", str(source)) == 1
    captured = capsys.readouterr()
    assert "2 read, 2 added" in captured.out and "2 rejected" in captured.out
    assert "line 2: longer than 1000 bytes" in captured.err
    assert "line 4: longer than 1000 bytes" in captured.err
    assert sorted(row["guid"] for row in exported(initialised, capsys)) == ["urn:test:post:1", "urn:test:post:3"]


def test_line_cap_is_stated_in_mib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from syndication.sources import jsonl
    from syndication.sources.base import Rejected
    from syndication.sources.normalise import Vocabulary

    monkeypatch.setattr(jsonl, "MAX_LINE_BYTES", 1024 * 1024)
    source = tmp_path / "one.jsonl"
    source.write_bytes(b"x" * (1024 * 1024 + 1) + b"\n")
    events = list(jsonl.read_jsonl_file(source, Vocabulary(themes=())))
    assert events[0] == Rejected("line 1", "longer than 1 MiB")


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"])
def test_a_date_out_of_range_in_utc_is_refused_clearly(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], moment: str
) -> None:
    write_jsonl(tmp_path / "dates.jsonl", [post_record(1, published=moment), post_record(2, updated=moment)])
    assert run(initialised, "import", str(tmp_path / "dates.jsonl")) == 1
    err = capsys.readouterr().err
    assert f"line 1: published date {moment!r} is out of range" in err
    assert f"line 2: updated date {moment!r} is out of range" in err
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, not a traceback
        run(initialised, "posts", "list", "--since", moment)
    assert exited.value.code == 2
    assert f"argument --since: {moment!r} is out of range" in capsys.readouterr().err


def test_parse_timestamp_out_of_range_is_a_value_error() -> None:
    from syndication.sources.normalise import parse_timestamp

    with pytest.raises(ValueError, match="out of range"):
        parse_timestamp("9999-12-31T23:59:59-05:00")


def test_over_long_title_and_author_name_are_refused(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_jsonl(
        tmp_path / "long.jsonl",
        [
            post_record(1, title="t" * 1001),
            post_record(2, authors=["Ana Pérez", "a" * 201]),
            post_record(3, title="t" * 1000, authors=["a" * 200]),
        ],
    )
    assert run(initialised, "import", str(tmp_path / "long.jsonl")) == 1
    captured = capsys.readouterr()
    assert "1 added" in captured.out and "2 rejected" in captured.out
    assert "line 1: title longer than 1000 characters (1001)" in captured.err
    assert "line 2: author name longer than 200 characters (201)" in captured.err
    [row] = exported(initialised, capsys)
    assert row["guid"] == "urn:test:post:3"


def test_bidirectional_controls_leave_titles_and_names(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An override left open turns the rest of a subject line or a reader's list around: posing text.
    record = post_record(1, title="\u202eStatement\u202c from \u2067the mayor", authors=["\u202eEvil\u2069 Corp"])
    assert run(initialised, "import", str(write_jsonl(tmp_path / "bidi.jsonl", [record]))) == 0
    [post] = exported(initialised, capsys)
    assert post["title"] == "Statement from the mayor"
    assert post["authors"] == ["Evil Corp"]


def test_text_fields_keep_their_text_and_controls_part_words(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The summary is plain text in JSON Lines: "<brackets>" is no tag, "&amp;" no reference (issue 18).
    record = post_record(
        1,
        title="Control\x07chars & <brackets>",
        summary="Ampersands & angle <brackets>, &amp; kept\x1fas typed",
        authors=["Tom & <Jerry>\x00Smith"],
        image={"url": "https://cdn.example.org/1.jpg", "alt": "a < b\x07& c"},
    )
    assert run(initialised, "import", str(write_jsonl(tmp_path / "text.jsonl", [record]))) == 0
    [post] = exported(initialised, capsys)
    assert post["title"] == "Control chars & <brackets>"
    assert post["summary"] == "Ampersands & angle <brackets>, &amp; kept as typed"
    assert post["authors"] == ["Tom & <Jerry> Smith"]
    assert post["image"]["alt"] == "a < b & c"
    # An export edited and imported again keeps its text: the summary is read as the text it is, not parsed.
    edited = {**post, "updated": "2024-05-30T00:00:00Z"}
    assert run(initialised, "import", str(write_jsonl(tmp_path / "again.jsonl", [edited]))) == 0
    assert exported(initialised, capsys) == [edited]


def test_an_overlong_summary_is_cut_with_a_warning(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = "Malmö São Paulo 北九州市 🌍 " * 2000  # about 50,000 characters
    assert run(initialised, "import", str(write_jsonl(tmp_path / "long.jsonl", [post_record(1, summary=given)]))) == 0
    assert "line 1: summary longer than 2000 characters: cut" in capsys.readouterr().err
    [post] = exported(initialised, capsys)
    kept = post["summary"].removesuffix("…")
    assert len(post["summary"]) <= 2001 and post["summary"].endswith("…")
    assert given.startswith(kept + " ")  # cut between words


def test_characters_no_url_may_hold_are_percent_encoded(
    initialised: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Raw, a quote or an angle bracket breaks the URL out of a plain-text email or a reader's list.
    record = post_record(1, url='https://news.example.org/p?a=1&b="><script>x</script>|{}')
    record.pop("guid")
    assert run(initialised, "import", str(write_jsonl(tmp_path / "odd.jsonl", [record]))) == 0
    [post] = exported(initialised, capsys)
    assert post["url"] == "https://news.example.org/p?a=1&b=%22%3E%3Cscript%3Ex%3C/script%3E%7C%7B%7D"
    assert post["guid"] == post["url"]
