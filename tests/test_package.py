"""pouch as a user installs it: the wheel built from this checkout (``pip install .``, not
editable), installed into a fresh virtualenv outside the checkout, run from a directory outside
it, metering a real openai SDK request against the fake OpenAI.

Offline, and plain about what comes from where. The wheel is built with the setuptools of the
test's virtualenv (``--no-build-isolation``: nothing is downloaded). The fresh virtualenv gets
pouch only from that wheel (``pip install --no-deps``); its dependencies (mitmproxy, tiktoken,
peewee, click) are the test virtualenv's, reached through a ``.pth`` line that adds that
site-packages folder and nothing else (the editable install of the checkout there is a ``.pth``
that runs code, and Python does not process ``.pth`` files of a folder added that way). pip
would have written mitmproxy's commands (mitmdump, mitmweb) beside the new python; they are
written here the way pip writes them. The gateway itself reports, from inside, the file every
``pouch`` and ``addons`` module it loaded came from.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx2
import openai
import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.money import Money
from pouch.domain.usage import Usage
from pouch.pricing.price import cost
from tests import pinned_prices
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import REAL_KEYS, REAL_OPENAI_KEY, free_ports

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "hello there"}]
SKIP = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info")
# Loaded after the chain: which file each pouch module in the gateway came from.
REPORTER = """\
import json, os, sys
loaded = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
          if name.split(".")[0] in ("pouch", "addons")}
with open(os.environ["POUCH_TEST_WHERE"], "w") as f:
    json.dump(loaded, f)
"""


def package_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """What ``pip install .`` reads: the project files and the two package folders, copied, so
    the build writes nothing into the checkout (others may be building or testing in it)."""
    copy = tmp_path_factory.mktemp("source")
    for item in ROOT.iterdir():
        if item.is_file() and not item.name.startswith("."):
            shutil.copy2(item, copy)
    for folder in ("pouch", "addons"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=SKIP)
    return copy


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    assert importlib.util.find_spec("setuptools"), "the build needs setuptools in this virtualenv: run scripts/bootstrap"
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "-q", "-w", str(dist)], check=True)
    [built] = dist.glob("pouch-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the checkout with pouch installed from the wheel alone."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    dependencies = {sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")}  # this virtualenv's
    (Path(site) / "pouch-test-dependencies.pth").write_text("".join(f"{path}\n" for path in dependencies))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "--disable-pip-version-check", "-q", str(wheel)], check=True)
    for entry in importlib.metadata.distribution("mitmproxy").entry_points:
        if entry.group == "console_scripts" and entry.name in ("mitmdump", "mitmweb"):
            script = where / "bin" / entry.name
            script.write_text(f"#!{python}\nimport sys\nfrom {entry.module} import {entry.attr}\n"
                              f"sys.exit({entry.attr}())\n")
            script.chmod(0o755)
    return where


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        yield fake


def user_env(venv: Path, home: Path) -> dict[str, str]:
    """A shell with the new virtualenv's commands first and nothing of the checkout's."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POUCH_DB", "VIRTUAL_ENV")}
    return env | REAL_KEYS | {"POUCH_HOME": str(home), "PATH": f"{venv / 'bin'}:/usr/bin:/bin"}


def pouch(venv: Path, home: Path, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "pouch"), *args], cwd=cwd, env=user_env(venv, home),
                          capture_output=True, text=True, check=check, timeout=60)


def test_addon_path_from_the_checkout_is_its_addons_folder():
    result = CliRunner().invoke(cli, ["addon-path"])
    assert result.exit_code == 0 and result.output == f"{ROOT / 'addons' / 'pouch.py'}\n"


def test_the_wheel_holds_the_package_its_data_and_the_chain(source, wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"pouch/{name}" for name in package_files(source / "pouch")}
    expected |= {f"pouch/addons/{name}" for name in package_files(source / "addons")}
    assert expected - names == set()
    assert "pouch/addons/pouch.py" in names
    # the data read at run time, wherever it lives in the package
    assert "pouch/pricing/prices.json" in names
    assert [n for n in names if n.startswith("pouch/pricing/reference/") and n.endswith(".gz")]
    assert len([n for n in names if re.fullmatch(r"[0-9a-f]{40}", n.rpartition("/")[2])]) >= 2, "tokenizer files"
    # nothing at the top of site-packages but pouch: no package named as commonly as `addons`
    assert {n.split("/")[0] for n in names} == {"pouch", wheel.name.split("-py3")[0] + ".dist-info"}


def test_every_cli_module_imports_alone(venv, tmp_path):
    """No import cycle: each module of pouch.cli, imported first, imports (pouch's modules are
    dropped from sys.modules between two, the third-party ones kept)."""
    code = """\
import importlib, pkgutil, sys
import pouch.cli
names = sorted(m.name for m in pkgutil.iter_modules(pouch.cli.__path__))
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] == "pouch"]:
        del sys.modules[loaded]
    importlib.import_module("pouch.cli." + name)
print(" ".join(names))
"""
    done = subprocess.run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=user_env(venv, tmp_path),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert {"main", "run", "keys", "usage", "prices"} <= set(done.stdout.split())


def test_the_installed_commands_read_the_shipped_prices(venv, tmp_path):
    home = tmp_path / "home"  # no operator prices.json: only what the wheel ships
    listed = json.loads(pouch(venv, home, tmp_path, "prices", "--json").stdout)
    assert any(entry["model"] == MODEL for entry in listed)
    checked = pouch(venv, home, tmp_path, "prices", "check", "--json", check=False)  # exits 1 on undocumented
    assert json.loads(checked.stdout)["compared"] > 0, checked.stderr  # the shipped reference map was read


def launch(how: str, venv: Path, port: int, web_port: int, home: Path, fake) -> list[str]:
    route = ["--set", f"pouch_route=api.openai.com={fake.url}", "--set", f"ssl_verify_upstream_trusted_ca={fake.ca_path}"]
    observe = ["-s", str(home / "report.py")]
    if how == "pouch run":
        return [str(venv / "bin" / "pouch"), "run", "--port", str(port), *route, *observe]
    if how == "pouch web":
        return [str(venv / "bin" / "pouch"), "web", "--port", str(port), "--set", f"web_port={web_port}",
                *route, *observe]
    # plain mitmproxy, as the README shows it: mitmproxy's defaults, so its CA goes where pouch run's would
    return [shutil.which("bash"), "-c", 'exec mitmdump -s "$(pouch addon-path)" "$@"', "bash", "-p", str(port),
            "--set", f"confdir={home / 'mitmproxy'}", *route, *observe]


@pytest.mark.parametrize("how", ["pouch run", "pouch web", "mitmdump -s $(pouch addon-path)"])
def test_the_installed_gateway_meters_a_request(how, venv, fake, isolated_home, tmp_path):
    home = isolated_home  # holds the prices the tests run at
    elsewhere = tmp_path / "elsewhere"  # the user's working directory, not the checkout
    elsewhere.mkdir()
    (home / "report.py").write_text(REPORTER)
    where = home / "where.json"

    chain = pouch(venv, home, elsewhere, "addon-path").stdout.strip()
    assert Path(chain).is_file() and Path(chain).is_relative_to(venv)
    secret = json.loads(pouch(venv, home, elsewhere, "keys", "create", "--name", "buyer", "--budget", "1",
                              "--json").stdout)["key"]

    port, web_port = free_ports(2)
    log_path = tmp_path / "gateway.log"
    env = user_env(venv, home) | {"POUCH_TEST_WHERE": str(where)}
    with open(log_path, "wb") as log:
        gateway = subprocess.Popen(launch(how, venv, port, web_port, home, fake), cwd=elsewhere, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (where.exists() and f"listening at 127.0.0.1:{port}" in log_path.read_text(errors="replace")):
            assert gateway.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)

        loaded = json.loads(where.read_text())
        assert "addons.keys" in loaded and "pouch.store.database" in loaded, "the chain is loaded"
        outside = [(name, file) for name, file in loaded.items() if file and not Path(file).is_relative_to(venv)]
        assert outside == [], "every pouch module comes from the installed wheel"

        tls = ssl.create_default_context(cafile=str(home / "mitmproxy" / "mitmproxy-ca-cert.pem"))
        client = openai.OpenAI(api_key=secret, max_retries=0,
                               http_client=httpx2.Client(proxy=f"http://127.0.0.1:{port}", verify=tls, timeout=30))
        reply = client.chat.completions.create(model=MODEL, messages=HELLO)
        assert reply.choices[0].message.content == "echo: hello there"
        assert fake.requests[-1].headers["authorization"] == f"Bearer {REAL_OPENAI_KEY}"

        deadline = time.monotonic() + 15
        while not (rows := json.loads(pouch(venv, home, elsewhere, "usage", "--json").stdout)):
            assert time.monotonic() < deadline, "no usage row"
            time.sleep(0.2)
    finally:
        gateway.terminate()
        try:
            gateway.wait(15)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()

    [row] = rows
    usage = Usage(input_tokens=reply.usage.prompt_tokens, output_tokens=reply.usage.completion_tokens)
    assert (row["key"], row["model"], row["status"], row["streamed"]) == ("buyer", MODEL, 200, False)
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    assert Money.usd(row["cost_usd"]) == cost(pinned_prices.table().resolve(MODEL), usage)


def test_the_installed_admin_serves_the_dashboard(venv, isolated_home, tmp_path):
    """``pouch admin`` from the wheel serves the dashboard's page and every file it loads (the
    static folder ships with the package), and its API answers the page's first question."""
    home = isolated_home
    token = json.loads(pouch(venv, home, tmp_path, "admin-tokens", "create", "--name", "wall", "--json").stdout)["token"]
    [port] = free_ports(1)
    log_path = tmp_path / "admin.log"
    with open(log_path, "wb") as log:
        served = subprocess.Popen([str(venv / "bin" / "pouch"), "admin", "--listen", f"127.0.0.1:{port}"], cwd=tmp_path,
                                  env=user_env(venv, home), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "admin API on" not in log_path.read_text(errors="replace"):
            assert served.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            page = http.get("/")
            assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
            loaded = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
            modules = re.findall(r'from "\./([^"]+)"', http.get("/static/js/app.js").text)
            assert "static/vendor/uplot/uPlot.iife.min.js" in loaded and "keys.js" in modules
            for path in loaded + [f"static/js/{name}" for name in modules]:
                assert http.get(f"/{path}").status_code == 200, path
            info = http.get("/api/info", headers={"Authorization": f"Bearer {token}"}).json()
            assert info["token"] == {"name": "wall", "role": "admin"} and info["mitmweb"] is None
    finally:
        served.terminate()
        served.wait(15)
