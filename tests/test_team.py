"""The editorial team in the store (issue 21): people with roles, invitations and password resets by email with
signed links that work once, sessions an owner can end, the configuration's editors adopted once, and each role's
limits on every editor route (a table walked from the gate's own rules, so a new route without a rule fails).
Over real HTTP against the real app, with a real SMTP server; SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from starlette.routing import Route

from syndication.app.audit import audit_events
from syndication.app.editions import plan_edition
from syndication.app.service import Service, init_store
from syndication.app.subscribers import add_subscriber
from syndication.app.team import (
    INVITE,
    LinkRefused,
    TeamError,
    add_person,
    change_role,
    invite,
    link_person,
    list_people,
    remove_person,
)
from syndication.cli import main
from syndication.config import load_settings
from syndication.core.passwords import hash_password
from syndication.core.team import ROLE_ACCESS, Access, Role
from syndication.web.app import create_app
from tests.support import write_config
from tests.test_web_editor import SINCE, UNTIL, sign_in
from tests.web_site import EDITOR, PASSWORD, WebSite, csrf_of, form_post, link_in_email, web_site

OTHER_PASSWORD = "a long enough password 42"


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site (nothing sent from the pages) whose configured editor ``ana`` became its owner, with a draft
    edition (1)."""
    with web_site(tmp_path, database_url, "[web]\nsend_on_approve = false\n") as running:
        add_subscriber(running.service, "sub@example.org", cadence="weekly", confirmed=True)
        plan = plan_edition(running.service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None and plan.edition.id == 1
        yield running


def signed_in_as(site: WebSite, name: str, password: str) -> httpx.Client:
    client = site.client()
    page = client.get("/editor/login").text
    answer = form_post(client, "/editor/login", {"name": name, "password": password}, page)
    assert answer.status_code == 303 and answer.headers["location"] == "/editor/", answer.text
    return client


def _person_id(page: str, name: str) -> str:
    """The id of ``name``'s row on the people page (from its forms' addresses)."""
    row = page.split(f'<th scope="row">{name}', 1)[1]
    found = re.search(r'action="/editor/people/(\d+)/role"', row)
    assert found, name
    return found.group(1)


def to_login(answer: httpx.Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/editor/login")


# --- Adopting the configuration's editors -----------------------------------------------------------------------


def test_init_makes_the_configured_editors_owners_once(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNDICATION_EDITORS", raising=False)  # `make test` exports the demo's editor
    hashes = {name: hash_password(PASSWORD, log2_n=10) for name in ("ana", "bo@example.org")}
    extra = "[editors.passwords]\n" + "".join(f'"{name}" = "{stored}"\n' for name, stored in hashes.items())
    config = write_config(tmp_path, database_url, extra)
    settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": "k" * 32})
    init_store(settings)
    with Service.open(settings) as service:
        people = list_people(service)
        assert [(p.name, p.role, p.email, p.joined) for p in people] == [
            ("ana", Role.OWNER, None, True),
            ("bo@example.org", Role.OWNER, "bo@example.org", True),
        ]
        assert [(e.actor, e.action, e.details["name"]) for e in audit_events(service)] == [
            ("system", "person.added", "bo@example.org"),
            ("system", "person.added", "ana"),
        ]
        remove_person(service, "bo@example.org", actor="cli:test")
    init_store(settings)  # the team is not empty: the configuration is not read again
    with Service.open(settings) as service:
        assert [p.name for p in list_people(service)] == ["ana"]
    assert main(["people", "import", "--config", str(config)]) == 0  # on purpose: the missing ones come back
    with Service.open(settings) as service:
        assert [p.name for p in list_people(service)] == ["ana", "bo@example.org"]


# --- The command line -------------------------------------------------------------------------------------------


def test_the_command_line_manages_the_team(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", "k" * 32)  # links are signed (a SQLite store would make a key file)
    monkeypatch.delenv("SYNDICATION_EDITORS", raising=False)  # `make test` exports the demo's editor
    config = write_config(tmp_path, database_url)
    args = ["--config", str(config)]
    assert main(["init", *args]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{OTHER_PASSWORD}\n"))
    assert (
        main(["people", "add", "root", "--role", "owner", "--email", "Root@Example.org", "--password-stdin", *args])
        == 0
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["people", "add", "lea", "--password-stdin", *args]) == 1
    assert "lea: the password is 5 characters long: use at least 12; nothing was changed" in capsys.readouterr().err
    assert main(["people", "add", "lea smith", "--password-stdin", *args]) == 2
    assert "is not a sign-in name" in capsys.readouterr().err
    assert main(["people", "add", "lea", "--role", "boss", "--password-stdin", *args]) == 2
    assert "'boss' is not a role (owner, editor, viewer)" in capsys.readouterr().err

    # No SMTP server listens at the configured port: the invitation is made and its link printed instead.
    assert main(["people", "invite", "lea", "--email", "lea@example.org", "--role", "viewer", *args]) == 0
    printed = capsys.readouterr()
    assert "could not be sent" in printed.err
    assert re.match(r"https://news.example.org/editor/welcome/\S+$", printed.out.strip())
    assert main(["people", "list", "--json", *args]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(p["name"], p["role"], p["email"], p["joined"]) for p in listed] == [
        ("lea", "viewer", "lea@example.org", False),
        ("root", "owner", "root@example.org", True),
    ]
    assert not any("scrypt" in str(value) for p in listed for value in p.values())  # never a hash

    assert main(["people", "role", "lea", "editor", *args]) == 0
    assert main(["people", "role", "root", "viewer", *args]) == 1  # the only owner
    assert "the team needs at least one owner" in capsys.readouterr().err
    assert main(["people", "remove", "root", *args]) == 1
    assert main(["people", "remove", "nobody", *args]) == 1
    assert "nobody in the team is called 'nobody'" in capsys.readouterr().err
    assert main(["people", "sessions", "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["people", "revoke", *args]) == 2  # neither a name nor --session
    assert main(["people", "revoke", "lea", *args]) == 0
    assert main(["people", "remove", "lea", *args]) == 0
    settings = load_settings(config, environ={})
    with Service.open(settings) as service:
        actions = [(e.actor.split(":")[0], e.action) for e in audit_events(service)]
    assert actions == [
        ("cli", "person.removed"),
        ("cli", "person.sessions_revoked"),
        ("cli", "person.role_changed"),
        ("cli", "person.invited"),
        ("cli", "person.added"),
    ]


# --- Invitations and resets over HTTP ------------------------------------------------------------------------------


def test_an_owner_invites_an_editor_who_joins_from_the_emailed_link(site: WebSite) -> None:
    with closing(signed_in_as(site, EDITOR, PASSWORD)) as owner:
        page = owner.get("/editor/people")
        assert page.status_code == 200 and ">ana" in page.text and 'href="/editor/people"' in page.text
        refused = form_post(owner, "/editor/people", {"name": "lea smith", "email": "x", "role": "editor"}, page.text)
        assert refused.status_code == 400 and "A name is 1 to 100 letters" in refused.text
        invited = form_post(
            owner, "/editor/people", {"name": "lea", "email": "Lea@Example.org", "role": "editor"}, page.text
        )
        assert invited.status_code == 303 and invited.headers["location"] == "/editor/people?done=invited"
        assert "The invitation was sent." in owner.get(invited.headers["location"]).text

    link = link_in_email(site.smtp, "lea@example.org", "editor/welcome")
    message = site.smtp.received_for("lea@example.org")[-1].parsed()
    assert message["Subject"] == "You are invited to the editorial team of Test Network"
    assert message["Auto-Submitted"] == "auto-generated"
    path = httpx.URL(link).path
    with site.client() as lea:
        assert lea.get("/editor/login").status_code == 200
        page = lea.get(path)
        assert page.status_code == 200 and "as lea, with the role of editor" in page.text
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        short = form_post(lea, path, {"password": "short", "again": "short"}, page.text)
        assert short.status_code == 400 and "Use at least 12 characters." in short.text
        differ = form_post(lea, path, {"password": OTHER_PASSWORD, "again": OTHER_PASSWORD + "!"}, page.text)
        assert differ.status_code == 400 and "The two passwords differ." in differ.text
        joined = form_post(lea, path, {"password": OTHER_PASSWORD, "again": OTHER_PASSWORD}, page.text)
        assert joined.status_code == 303 and joined.headers["location"] == "/editor/"
        dashboard = lea.get("/editor/")
        assert dashboard.status_code == 200 and "Sign out lea" in dashboard.text
        assert 'href="/editor/people"' not in dashboard.text  # an editor does not manage the team
        assert lea.get("/editor/people").status_code == 403
    with site.client() as again:
        used = again.get(path)
        assert used.status_code == 400 and "This link was used already" in used.text
    assert signed_in_as(site, "lea", OTHER_PASSWORD)
    events = [(e.actor, e.action) for e in audit_events(site.service, limit=2)]
    assert events == [("editor:lea", "person.joined"), (f"editor:{EDITOR}", "person.invited")]


def test_a_reset_link_sets_a_new_password_once_and_ends_every_session(site: WebSite) -> None:
    add_person(site.service, "lea", "lea@example.org", Role.EDITOR, OTHER_PASSWORD, actor="cli:test")
    first = signed_in_as(site, "lea", OTHER_PASSWORD)
    assert first.get("/editor/").status_code == 200
    with site.client() as anyone:
        page = anyone.get("/editor/login").text
        assert 'href="/editor/forgot"' in page
        form = anyone.get("/editor/forgot").text
        unknown = form_post(anyone, "/editor/forgot", {"reference": "nobody@example.org"}, form)
        known = form_post(anyone, "/editor/forgot", {"reference": "LEA@example.org"}, form)
        assert unknown.status_code == known.status_code == 200
        said = "an email with a link to choose a new password is on its way"
        assert said in unknown.text and said in known.text  # the answer tells nobody who is in the team
    link = link_in_email(site.smtp, "lea@example.org", "editor/reset")
    assert not site.smtp.received_for("nobody@example.org")
    path = httpx.URL(link).path
    new_password = "another long password 7"
    with site.client() as lea:
        page = lea.get(path).text
        assert form_post(lea, path, {"password": new_password, "again": new_password}, page).status_code == 303
        assert lea.get("/editor/").status_code == 200
        used = lea.get(path)
        assert used.status_code == 400 and "This link was used already" in used.text
    assert to_login(first.get("/editor/"))  # the session made with the old password ended
    first.close()
    with site.client() as client:
        page = client.get("/editor/login").text
        old = form_post(client, "/editor/login", {"name": "lea", "password": OTHER_PASSWORD}, page)
        assert old.status_code == 400
    assert signed_in_as(site, "lea", new_password)


def test_links_are_refused_when_forged_expired_replaced_or_their_person_left(site: WebSite) -> None:
    service = site.service
    made = invite(service, "lea", "lea@example.org", Role.VIEWER, actor="cli:test")
    assert made.sent
    token = made.url.rsplit("/", 1)[1]
    assert link_person(service, INVITE, token).name == "lea"
    with pytest.raises(LinkRefused) as forged:
        link_person(service, INVITE, token[:-2] + "xx")
    assert forged.value.reason == "invalid"
    with pytest.raises(LinkRefused) as other_purpose:
        link_person(service, "reset", token)
    assert other_purpose.value.reason == "invalid"
    later = Service(service.settings, service.engine, lambda: service.clock() + timedelta(days=8))
    with pytest.raises(LinkRefused) as expired:
        link_person(later, INVITE, token)
    assert expired.value.reason == "expired"
    newer = invite(service, "lea", "lea@example.org", Role.VIEWER, actor="cli:test")
    with pytest.raises(LinkRefused) as replaced:  # a newer invitation replaces the one before
        link_person(service, INVITE, token)
    assert replaced.value.reason == "used"
    remove_person(service, "lea", actor="cli:test")
    with pytest.raises(LinkRefused) as gone:
        link_person(service, INVITE, newer.url.rsplit("/", 1)[1])
    assert gone.value.reason == "gone"
    with site.client() as client:
        page = client.get("/editor/welcome/" + token)
        assert page.status_code == 400 and "This link does not work" in page.text


# --- Roles and sessions ---------------------------------------------------------------------------------------


def test_an_owner_changes_roles_and_ends_sessions_at_once(site: WebSite) -> None:
    add_person(site.service, "vic", None, Role.VIEWER, OTHER_PASSWORD, actor="cli:test")
    vic = signed_in_as(site, "vic", OTHER_PASSWORD)
    page = vic.get("/editor/editions/1")
    assert page.status_code == 200 and "/editor/editions/1/approve" not in page.text  # no controls for a viewer
    token = csrf_of(vic.get("/editor/forgot").text)  # a page with a form: the browser's CSRF token
    refused = vic.post("/editor/editions/1/approve", data={"csrf_token": token})
    assert refused.status_code == 403 and "Your role (viewer) does not allow this" in refused.text
    with closing(signed_in_as(site, EDITOR, PASSWORD)) as owner:
        people = owner.get("/editor/people").text
        vic_id = _person_id(people, "vic")
        changed = form_post(owner, f"/editor/people/{vic_id}/role", {"role": "editor"}, people)
        assert changed.status_code == 303
        # The same session may approve now: the role is read on every request.
        approved = form_post(vic, "/editor/editions/1/approve", {}, vic.get("/editor/editions/1").text)
        assert approved.status_code == 303
        people = owner.get("/editor/people").text
        assert "vic" in people and "Signed-in sessions" in people
        ended = form_post(owner, f"/editor/people/{vic_id}/sessions/revoke", {}, people)
        assert ended.status_code == 303
        assert to_login(vic.get("/editor/"))
        ana_id = _person_id(people, EDITOR)
        last = form_post(owner, f"/editor/people/{ana_id}/role", {"role": "viewer"}, people)
        assert last.status_code == 409 and "The team needs at least one owner" in last.text
        gone = form_post(owner, f"/editor/people/{vic_id}/remove", {}, people)
        assert gone.status_code == 303 and ">vic<" not in owner.get("/editor/people").text
    vic.close()
    with pytest.raises(TeamError) as refused_change:
        change_role(site.service, EDITOR, Role.EDITOR, actor="cli:test")
    assert refused_change.value.reason == "last_owner"


def test_signing_out_ends_the_session_wherever_its_cookie_was_copied(site: WebSite) -> None:
    with site.client() as client:
        sign_in(client)
        copy = httpx.Client(base_url=site.server.url(), cookies=client.cookies, follow_redirects=False)
        assert copy.get("/editor/").status_code == 200
        page = client.get("/editor/").text
        assert form_post(client, "/editor/logout", {}, page).status_code == 303
        assert to_login(copy.get("/editor/"))
        copy.close()


# --- Every editor route's rule, for every role -----------------------------------------------------------------


ROLE_REFUSAL = "does not allow this"
ROLE_PEOPLE = (("vic", Role.VIEWER), ("ed", Role.EDITOR), ("own", Role.OWNER))
PARAMETERS = re.compile(r"\{(\w+)(?::\w+)?\}")


def _address(path: str, values: dict[str, str]) -> str:
    return PARAMETERS.sub(lambda match: values.get(match.group(1), "1"), path)


def test_every_editor_route_has_a_rule_and_each_role_is_held_to_it(site: WebSite) -> None:
    """Walks the gate's own table: a route under /editor made without a rule fails the first assertion; each rule
    is then tried as each role (and signed out): allowed roles get past the gate, the others are refused."""
    app = create_app(site.settings)
    rules = app.state.editor_gate.rules
    declared = {
        (method, route.path)
        for route in app.router.routes
        if isinstance(route, Route) and route.path.startswith("/editor")
        for method in (route.methods or ())
        if method != "HEAD"
    }
    assert declared == set(rules), "every editor route is made by the gate, with its rule"
    assert {Access.READ, Access.EDIT, Access.MANAGE, None} <= set(rules.values())

    for name, role in ROLE_PEOPLE:
        add_person(site.service, name, None, role, OTHER_PASSWORD, actor="cli:test")
    clients = {role: signed_in_as(site, name, OTHER_PASSWORD) for name, role in ROLE_PEOPLE}
    outsider = site.client()
    values = {"edition_id": "1", "person_id": "999999", "session_id": "0" * 32, "token": "x", "action": "approve"}
    try:
        for (method, path), needs in sorted(rules.items(), key=lambda item: (item[0][1], item[0][0])):
            address = _address(path, values)
            if needs is None:
                answer = outsider.request(method, address)
                assert not to_login(answer) and answer.status_code != 401, (method, path)
                continue
            answer = outsider.request(method, address)
            assert to_login(answer) or answer.status_code == 401, (method, path, answer.status_code)
            for role, client in clients.items():
                # Without a CSRF token an allowed post is refused by the form check, never by the gate.
                answer = client.request(method, address)
                allowed = needs in ROLE_ACCESS[role]
                refused = answer.status_code == 403 and (ROLE_REFUSAL in answer.text or "role cannot" in answer.text)
                assert refused != allowed, (method, path, role, answer.status_code)
                assert not to_login(answer), (method, path, role)
    finally:
        outsider.close()
        for client in clients.values():
            client.close()
