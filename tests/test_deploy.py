"""The deployment files hold their rules: deploy/Containerfile (no container engine runs on this machine, so it is
parsed and checked here, and tests/test_install.py runs its steps on a fresh install) and deploy/syndication.service
(checked, and verified by ``systemd-analyze verify`` where that exists).

The image: built from a normal install (never ``-e``), run by a user that is not root, its data a volume, its
configuration file read-only and holding only absolute paths into that volume, a HEALTHCHECK on /healthz, and
``init`` before ``run``. The unit: a user of its own, its state directory, the signing key as a credential,
hardening, and the same configuration file.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

from syndication.config import load_settings

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
UNIT = ROOT / "deploy" / "syndication.service"
DEPLOY_CONFIG = ROOT / "deploy" / "config.toml"
DATA = PurePosixPath("/var/lib/syndication")


@dataclass
class Stage:
    """One FROM of a Containerfile and its instructions, each (name in upper case, arguments as written)."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == name]

    def last(self, name: str) -> str:
        found = self.all(name)
        assert found, f"no {name} in the stage FROM {self.base}"
        return found[-1]

    def environment(self) -> dict[str, str]:
        """ENV's variables (the KEY=VALUE form, several to an instruction), later ones winning."""
        values: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for word in shlex.split(arguments):
                key, separator, value = word.partition("=")
                assert separator, f"ENV {arguments!r}: use the KEY=VALUE form"
                values[key] = value
        return values

    def exec_form(self, name: str) -> list[str]:
        """The JSON (exec) form of CMD, or of HEALTHCHECK's CMD, as a list of words."""
        arguments = self.last(name)
        if name == "HEALTHCHECK":
            arguments = arguments[arguments.index("CMD ") + len("CMD ") :]
        words = json.loads(arguments)
        assert isinstance(words, list) and all(isinstance(word, str) for word in words)
        return words


def parse_containerfile(text: str) -> list[Stage]:
    """The stages of a Containerfile: comments dropped, continued lines (a trailing backslash) joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the file ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        name, _, arguments = line.partition(" ")
        name = name.upper()
        if name == "FROM":
            stages.append(Stage(arguments.strip()))
        else:
            assert stages, f"{name} before any FROM"
            stages[-1].instructions.append((name, arguments.strip()))
    return stages


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section -> key -> every value given (a key may repeat: Environment, SystemCallFilter)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{line!r} outside any section"
        key, separator, value = line.partition("=")
        assert separator, f"{line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def image() -> Stage:
    """The stage the image is made of: the last one."""
    return parse_containerfile(CONTAINERFILE.read_text("utf-8"))[-1]


def test_the_image_is_a_normal_install_run_by_its_own_user() -> None:
    stages = parse_containerfile(CONTAINERFILE.read_text("utf-8"))
    runs = " ".join(arguments for stage in stages for arguments in stage.all("RUN"))
    assert "pip install" in runs
    assert not {"-e", "--editable"} & set(shlex.split(runs)), "the image installs the project, not a link to /src"
    final = stages[-1]
    user = final.last("USER").split(":")[0]
    assert user not in ("root", "0"), "the service must not run as root"
    assert "useradd" in " ".join(final.all("RUN")) and user in " ".join(final.all("RUN"))
    # What the build stage copies is what pyproject.toml needs, and it exists (tests/test_install.py builds it).
    for stage in stages:
        for arguments in stage.all("COPY"):
            if arguments.startswith("--from"):
                continue
            *sources, _ = shlex.split(arguments)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"


def test_its_data_is_a_volume_its_configuration_read_only_with_absolute_paths_into_it(tmp_path: Path) -> None:
    final = image()
    volumes = json.loads(final.last("VOLUME"))
    assert str(DATA) in volumes
    assert final.last("WORKDIR") == str(DATA)
    environment = final.environment()
    config_path = environment["SYNDICATION_CONFIG"]
    copies = {shlex.split(arguments)[-1]: shlex.split(arguments)[0] for arguments in final.all("COPY")}
    assert copies[config_path] == "deploy/config.toml"
    assert not any(key.startswith("SYNDICATION_") and key != "SYNDICATION_CONFIG" for key in environment), (
        "settings belong to the operator's environment or deploy/config.toml, not baked into the image"
    )
    # Read where the image puts it, in a folder of its own: every path it gives is absolute and in the volume,
    # so nothing is written beside it (the shipped file used to say var/..., taken from /config: Permission denied).
    folder = tmp_path / "etc-syndication"
    folder.mkdir()
    shutil.copy(DEPLOY_CONFIG, folder / "config.toml")
    settings = load_settings(folder / "config.toml", environ={})
    assert settings.database.url == f"sqlite:///{DATA}/syndication.db"
    assert PurePosixPath(settings.feeds.output_dir) == DATA / "feeds"
    unit = parse_unit(UNIT.read_text("utf-8"))["Service"]
    assert f"SYNDICATION_CONFIG={config_path}" in " ".join(unit["Environment"]), "one file for image and unit"


def test_the_image_checks_health_and_starts_with_init() -> None:
    final = image()
    check = final.exec_form("HEALTHCHECK")
    assert any("/healthz" in word for word in check)
    assert "--start-period" in final.last("HEALTHCHECK")  # init may migrate a large store first
    command = " ".join(final.exec_form("CMD"))
    assert command.index("syndication init &&") < command.index("exec syndication run")
    port = final.last("EXPOSE")
    assert f"--port {port}" in command and f":{port}/healthz" in " ".join(check)


def test_the_systemd_unit_runs_as_its_own_user_with_a_credential_and_hardening() -> None:
    unit = parse_unit(UNIT.read_text("utf-8"))
    service = unit["Service"]

    def one(key: str) -> str:
        (value,) = service[key]
        return value

    assert one("User") not in ("root", "0") and one("DynamicUser") == "yes"
    assert one("StateDirectory") == "syndication" and one("WorkingDirectory") == f"/var/lib/{one('StateDirectory')}"
    credential = one("LoadCredential")
    assert credential.startswith("secret-key:/")
    assert "SYNDICATION_SECRET_KEY_FILE=%d/secret-key" in service["Environment"]
    assert not any("SECRET_KEY=" in value.replace("_FILE=", "") for value in service["Environment"])
    hardening = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                 "PrivateDevices": "yes", "RestrictSUIDSGID": "yes", "CapabilityBoundingSet": ""}  # fmt: skip
    for key, value in hardening.items():
        assert one(key) == value, key
    assert shlex.split(one("ExecStartPre"))[1:] == ["init"]
    assert shlex.split(one("ExecStart"))[1:3] == ["run", "--host"]
    assert one("KillSignal") == "SIGTERM" and unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that the commands exist: the unit names /opt/syndication/bin/syndication, installed by the
    # operator; here an executable stands at a path of this test's own instead.
    program = tmp_path / "opt" / "syndication" / "bin" / "syndication"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n", "utf-8")
    program.chmod(0o755)
    text = UNIT.read_text("utf-8").replace("/opt/syndication/bin/syndication", str(program))
    unit = tmp_path / "syndication.service"
    unit.write_text(text, "utf-8")
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert "syndication.service" not in verified.stderr, verified.stderr  # no warning about the unit
