"""The project installed the way a server gets it (a wheel, not an editable install) finds its templates.

A wheel is built from a copy of what the Containerfile copies (pyproject.toml, README.md, syndication/,
templates/) and installed with ``--no-deps`` into a fresh virtual environment. The dependencies are made
importable there by a ``.pth`` file naming the running environment's site-packages (its own ``.pth`` files, the
editable install's finder among them, are not run from there), so the test needs no package index to install
them (building the wheel fetches setuptools, as every ``pip install .`` does), while every file of syndication
itself comes from the wheel. Then, from a folder outside the checkout, the
installed ``syndication`` command renders a digest preview, builds the feeds and serves pages over real HTTP;
and deploy/Containerfile's steps run on the same install (no container engine runs here): its configuration,
settings and secret from the environment only, its command (``init``, ``run``) and its HEALTHCHECK.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support import post_record, wait_for, write_config, write_jsonl

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SECRET = "install-test-signing-key-" + "i" * 7  # 32 characters
SHIPPED = ("pyproject.toml", "README.md", "syndication", "templates")  # what deploy/Containerfile copies
BUILD_SECONDS = 300


@dataclass(frozen=True)
class Installed:
    """The fresh environment the wheel went into, and the copy it was built from."""

    venv: Path
    source: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.venv / "bin" / "syndication"


def _run(arguments: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        [str(argument) for argument in arguments],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_SECONDS, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, (
        f"{' '.join(map(str, arguments))} exited with {completed.returncode}\n"
        f"--- stdout ---\n{completed.stdout[-4000:]}\n--- stderr ---\n{completed.stderr[-4000:]}"
    )
    return completed.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A wheel of the checkout, installed (not editable) into a new virtual environment."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"
    source.mkdir()
    for name in SHIPPED:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    wheels = base / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels, source], cwd=base)
    (wheel,) = wheels.glob("syndication-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=base)
    python = venv / "bin" / "python"
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(site_packages.strip(), "dependencies.pth").write_text("\n".join(ours) + "\n", encoding="utf-8")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", wheel], cwd=base)
    return Installed(venv=venv, source=source, wheel=wheel)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    return tmp_path


def _environment() -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SYNDICATION_", "PYTHON")) and key != "VIRTUAL_ENV"
    }
    environment["SYNDICATION_SECRET_KEY"] = SECRET
    environment["PYTHONNOUSERSITE"] = "1"
    return environment


def test_the_wheel_holds_every_module_and_template(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    source = installed.source
    modules = {path.relative_to(source).as_posix() for path in (source / "syndication").rglob("*.py")}
    templates = {
        "syndication/" + path.relative_to(source).as_posix()
        for path in (source / "templates").rglob("*")
        if path.is_file()
    }
    assert "syndication/templates/email/digest.html" in templates
    assert "syndication/templates/web/subscribe.html" in templates
    catalogs = {path.relative_to(source).as_posix() for path in (source / "syndication").rglob("*.po")}
    assert "syndication/locales/es/LC_MESSAGES/web.po" in catalogs
    # A package missing from [tool.setuptools] packages in pyproject.toml shows here.
    assert modules - names == set(), "modules missing from the wheel: add their package to pyproject.toml"
    assert templates - names == set(), "templates missing from the wheel"
    assert catalogs - names == set(), "message catalogs missing from the wheel: see package-data in pyproject.toml"


def test_installed_project_finds_its_templates_outside_the_checkout(installed: Installed, outside: Path) -> None:
    environment = _environment()
    where = json.loads(
        _run(
            [
                installed.python,
                "-c",
                "import json, syndication, syndication.resources as r;"
                " print(json.dumps([syndication.__file__, str(r.email_templates()), str(r.web_templates())]))",
            ],
            cwd=outside,
            env=environment,
        )
    )
    for path in where:  # the package and its templates come from the new environment, not from the checkout
        assert Path(path).resolve().is_relative_to(installed.venv.resolve()), path

    config = write_config(outside, "sqlite:///var/store.db")
    write_jsonl(
        outside / "posts.jsonl",
        [post_record(1, title="Wheels carry their templates"), post_record(2, title="A second installed post")],
    )

    def syndication(*arguments: str) -> str:
        return _run([installed.command, "--config", config, *arguments], cwd=outside, env=environment)

    syndication("init")
    syndication("import", "posts.jsonl")
    assert (outside / "var" / "store.db").is_file()
    syndication(
        "digest", "preview", "--since", "2024-05-01", "--until", "2024-06-01", "--format", "html", "--out", "x.html"
    )
    preview = (outside / "x.html").read_text(encoding="utf-8")
    assert "Wheels carry their templates" in preview
    assert "View this email in your browser" in preview  # from templates/email/base.html
    syndication("feeds", "build")
    assert "Test Network: feeds" in (outside / "var" / "feeds" / "index.html").read_text(encoding="utf-8")

    with _serving(installed, config, outside, environment) as client:
        page = client.get("/subscribe")
        assert page.status_code == 200, page.text
        assert "Subscribe" in page.text
        assert "Test Network" in page.text
        spanish = client.get("/subscribe", headers={"Accept-Language": "es"})  # the web catalogs were installed
        assert '<html lang="es">' in spanish.text and "<h1>Suscribirse</h1>" in spanish.text, spanish.text
        stylesheet = client.get("/assets/site.css")
        assert stylesheet.status_code == 200
        assert stylesheet.headers["content-type"].startswith("text/css")
        index = client.get("/feeds/index.html")
        assert index.status_code == 200, index.text
        assert "Test Network: feeds" in index.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _serving(installed: Installed, config: Path, cwd: Path, environment: dict[str, str]) -> Iterator[httpx.Client]:
    """``syndication serve`` on a free port, answering; stopped (and killed if it must be) on the way out."""
    port = _free_port()
    log = cwd / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [str(installed.command), "--config", str(config), "serve", "--port", str(port)],
            cwd=cwd, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def answering() -> bool:
                if server.poll() is not None:
                    raise AssertionError(f"syndication serve exited with {server.returncode}:\n{log.read_text()}")
                try:
                    return client.get("/subscribe").status_code > 0
                except httpx.TransportError:
                    return False

            wait_for(answering, f"syndication serve on port {port}", timeout=60)
            yield client
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=15)


def test_the_container_image_steps_run_with_configuration_from_the_environment(
    installed: Installed, outside: Path
) -> None:
    """deploy/Containerfile's steps on this install, as its last stage sets them up: its configuration file in a
    folder of its own, paths into a data folder standing for the volume, settings and the signing key (as a
    secret file) from the environment only, its CMD (``init``, then ``run``) from the data folder, and its
    HEALTHCHECK answering; SIGTERM then stops the service cleanly. Nothing is written beside the configuration."""
    from tests.test_deploy import DATA, DEPLOY_CONFIG, image

    final = image()
    data, etc = outside / "data", outside / "etc"
    data.mkdir()
    etc.mkdir()
    image_environment = final.environment()
    config = etc / Path(image_environment["SYNDICATION_CONFIG"]).name
    config.write_text(DEPLOY_CONFIG.read_text("utf-8").replace(str(DATA), str(data)), "utf-8")
    secret = outside / "secret-key"
    secret.write_text(SECRET + "\n", "utf-8")
    port = _free_port()
    environment = _environment()
    del environment["SYNDICATION_SECRET_KEY"]
    environment.update(
        {key: value for key, value in image_environment.items() if key not in ("PATH", "SYNDICATION_CONFIG")}
    )
    environment.update(
        PATH=f"{installed.venv / 'bin'}{os.pathsep}{environment.get('PATH', '')}",
        SYNDICATION_CONFIG=str(config),
        SYNDICATION_SECRET_KEY_FILE=str(secret),
        SYNDICATION_SITE__BASE_URL="https://news.example.org",
        SYNDICATION_SITE__TITLE="Contained Network",
        SYNDICATION_THEMES='[{"slug": "water", "name": "Water"}]',
    )
    command = [word.replace("--port 8000", f"--port {port}").replace("0.0.0.0", "127.0.0.1")
               for word in final.exec_form("CMD")]  # fmt: skip
    check = [word.replace(":8000/", f":{port}/") for word in final.exec_form("HEALTHCHECK")]
    check[0] = str(installed.venv / "bin" / check[0])
    log = outside / "run.log"
    with log.open("wb") as output:
        service = subprocess.Popen(
            command, cwd=data, env=environment, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def healthy() -> bool:
            if service.poll() is not None:
                raise AssertionError(f"the image's command exited with {service.returncode}:\n{log.read_text()}")
            return subprocess.run(check, env=environment, capture_output=True, timeout=30, check=False).returncode == 0

        wait_for(healthy, "the image's HEALTHCHECK", timeout=90)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            page = client.get("/subscribe")
            assert page.status_code == 200 and "Contained Network" in page.text and "Water" in page.text
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)  # sh exec'd the service: the signal reaches it, as docker stop's
        try:
            status = service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(timeout=15)
            raise
    assert status == 0, log.read_text()
    assert sorted(path.name for path in etc.iterdir()) == [config.name], "written beside the configuration"
    assert (data / "syndication.db").is_file() and (data / "feeds" / "index.html").is_file()
    assert not (data / "signing-key").exists()  # the key came from the secret file
    said = log.read_text()
    assert "store ready at" in said and "Traceback" not in said
