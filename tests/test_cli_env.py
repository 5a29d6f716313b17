"""``pouch env`` as a user applies it: the lines are evaluated by real shells (bash; zsh and fish
where installed) in an environment holding nothing else, and what the shell then has is read
back from a child process. The bundle is checked on disk (what it holds, when it is rewritten),
and one end-to-end test evaluates the lines against a real gateway and sends a request with the
openai SDK given no key, proxy or CA of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from click.testing import CliRunner

from pouch.cli import env as env_cli
from pouch.cli import run, trust
from pouch.cli.main import cli
from pouch.services import keys as key_service
from pouch.store import keys as key_store
from pouch.store.database import UsageRow
from tests.fakes.openai_fake import FakeOpenAI
from tests.gateway import Gateway

POUCH = str(Path(sys.executable).with_name("pouch"))
DUMP = "import json, os; print(json.dumps(dict(os.environ)))"
SECRET = "pouch-" + "A" * 43
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
KEY_VARIABLES = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CODEX_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY")
# every character a shell might act on; in a proxy password the URL encodes some of them
AWKWARD = "it's \"quoted\" $HOME `id` $(id) \\back\\slash\\' & (x); # not a comment ‘smart’ ’ 100% ~!*"


def pouch_env(*args, ok=True):
    result = CliRunner().invoke(cli, ["env", *args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def variables(text: str) -> dict[str, str]:
    """What bash has after evaluating ``text`` (and nothing else)."""
    return evaluated("bash", text)


def bare_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell's environment with nothing of this one's: no proxy, no CA, no provider key."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "POUCH_HOME": str(home), "LANG": "C.UTF-8", **extra}


SHELL_RUN = {  # evaluate the file $EVAL_FILE (not $LINES: zsh owns that name), then print the environment the shell has
    "bash": ["bash", "-c", 'eval "$(cat "$EVAL_FILE")" && exec "$PY" -c "$DUMP"'],
    "zsh": ["zsh", "-f", "-c", 'eval "$(cat "$EVAL_FILE")" && exec "$PY" -c "$DUMP"'],
    "fish": ["fish", "--no-config", "-c", "source $EVAL_FILE; and exec $PY -c $DUMP"],
    "powershell": ["pwsh", "-NoProfile", "-NonInteractive", "-Command",
                   "Get-Content -Raw $env:EVAL_FILE | Invoke-Expression; & $env:PY -c $env:DUMP"],
}


def installed(shell: str) -> str:
    program = SHELL_RUN[shell][0]
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed on this machine, so its lines cannot be evaluated here")
    return shell


def evaluated(shell: str, text: str, tmp: Path | None = None) -> dict[str, str]:
    tmp = tmp or Path(os.environ["POUCH_HOME"])
    lines = tmp / f"lines-{uuid.uuid4().hex}"
    lines.write_text(text)
    out = subprocess.run(SHELL_RUN[shell], env=bare_env(tmp, EVAL_FILE=str(lines), PY=sys.executable, DUMP=DUMP),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# -- the lines, in each shell ----------------------------------------------------------------


@pytest.mark.parametrize("shell", list(env_cli.SHELLS))
def test_any_value_survives_each_shells_quoting(shell, tmp_path):
    installed(shell)
    value = AWKWARD + "\nsecond line\n"
    text = env_cli.render(shell, "a comment with 'quotes'\nexport INJECTED=1", [("POUCH_X", value)])
    assert text.count("\n") == 2 + value.count("\n"), "the comment stays one line"
    got = evaluated(shell, text, tmp_path)
    assert got["POUCH_X"] == value
    assert "INJECTED" not in got


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_evaluated_in_a_real_shell_every_runtime_is_pointed_at_the_gateway(shell, isolated_home):
    installed(shell)
    password = AWKWARD
    script = {
        "fish": "$POUCH env --key $KEY --proxy-auth $AUTH | source; and exec $PY -c $DUMP",
    }.get(shell, 'eval "$("$POUCH" env --key "$KEY" --proxy-auth "$AUTH")" && exec "$PY" -c "$DUMP"')
    program = SHELL_RUN[shell][:-1]
    extra = dict(POUCH=POUCH, KEY=SECRET, AUTH=f"alice:{password}", PY=sys.executable, DUMP=DUMP, SHELL=f"/bin/{shell}")
    out = subprocess.run([*program, script], env=bare_env(isolated_home, **extra), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)

    proxies = {got[name] for name in PROXY_VARIABLES}
    assert len(proxies) == 1
    proxy = urlsplit(proxies.pop())
    assert (proxy.scheme, proxy.hostname, proxy.port) == ("http", "127.0.0.1", 8080), "pouch run's defaults"
    assert unquote(proxy.username) == "alice" and unquote(proxy.password) == password
    assert got["NO_PROXY"] == got["no_proxy"] == "localhost,127.0.0.1,::1"
    confdir = isolated_home / "mitmproxy"
    assert got["NODE_EXTRA_CA_CERTS"] == str(confdir / trust.CA_NAME)
    bundle = str(confdir / trust.BUNDLE_NAME)
    assert got["SSL_CERT_FILE"] == got["REQUESTS_CA_BUNDLE"] == got["CURL_CA_BUNDLE"] == bundle
    assert all(got[name] == SECRET for name in KEY_VARIABLES)
    assert got["NODE_USE_ENV_PROXY"] == "1"


def test_the_first_line_is_a_comment_and_the_shell_defaults_to_shells(monkeypatch):
    for shell, first in [("/usr/bin/fish", "set -gx "), ("/bin/zsh", "export "), ("/usr/bin/pwsh", "$env:"),
                         ("/bin/tcsh", "export ")]:
        monkeypatch.setenv("SHELL", shell)
        lines = pouch_env().stdout.splitlines()
        assert lines[0].startswith("# pouch env: ") and "http://127.0.0.1:8080" in lines[0]
        assert all(line.startswith(first) for line in lines[1:]), (shell, lines)


def test_powershell_doubles_every_quote_it_reads_as_one():
    assert env_cli._powershell("it's ‘a’ ’b‛ ‚") == "'it''s ‘‘a’’ ’’b‛‛ ‚‚'"


# -- where the gateway is, and who the client says it is ---------------------------------------


def test_the_same_arguments_as_pouch_run_give_the_same_address():
    got = variables(pouch_env("--port", "9001").stdout)
    assert got["HTTPS_PROXY"] == "http://127.0.0.1:9001"
    got = variables(pouch_env("--set", "listen_port=9002", "--listen-host", "::1").stdout)
    assert got["HTTPS_PROXY"] == "http://[::1]:9002"
    got = variables(pouch_env("--proxy", "gw.example:3128", "--key", SECRET).stdout)
    assert got["HTTPS_PROXY"] == f"http://pouch:{SECRET}@gw.example:3128", "beyond loopback the key is the password"
    got = variables(pouch_env("--proxy", "http://me:pw@127.0.0.1:3128", "--key", SECRET).stdout)
    assert got["HTTPS_PROXY"] == "http://me:pw@127.0.0.1:3128", "credentials given in the URL are kept"


def test_a_loopback_gateway_needs_no_proxy_credentials():
    got = variables(pouch_env("--key", SECRET).stdout)
    assert got["HTTPS_PROXY"] == "http://127.0.0.1:8080" and got["OPENAI_API_KEY"] == SECRET


def test_listening_everywhere_the_key_is_the_proxy_password():
    got = variables(pouch_env("--key", SECRET, "--listen-host", "0.0.0.0").stdout)
    assert got["HTTPS_PROXY"] == f"http://pouch:{SECRET}@127.0.0.1:8080"
    got = variables(pouch_env("--key", SECRET, "--set", "pouch_proxy_auth=on").stdout)
    assert got["HTTPS_PROXY"] == f"http://pouch:{SECRET}@127.0.0.1:8080"


def test_required_proxy_auth_without_a_key_is_said_on_stderr():
    result = pouch_env("--listen-host", "0.0.0.0")
    assert "requires proxy authentication" in result.stderr
    assert variables(result.stdout)["HTTPS_PROXY"] == "http://127.0.0.1:8080"


def test_mitmproxys_own_proxyauth(tmp_path):
    got = variables(pouch_env("--key", SECRET, "--proxyauth", "bob:s3cret").stdout)
    assert got["HTTPS_PROXY"] == "http://bob:s3cret@127.0.0.1:8080"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("bob:{SHA}unused\n")
    result = pouch_env("--key", SECRET, "--proxyauth", f"@{htpasswd}", ok=False)
    assert result.exit_code == 1 and "--proxy-auth USER:PASS" in result.stderr
    got = variables(pouch_env("--key", SECRET, "--proxyauth", f"@{htpasswd}", "--proxy-auth", "bob:pw@x").stdout)
    assert got["HTTPS_PROXY"] == "http://bob:pw%40x@127.0.0.1:8080"


@pytest.mark.parametrize("args, says", [
    (["--mode", "reverse:https://api.openai.com"], "no regular proxy listener"),
    (["--proxy", "not a url"], "--proxy"),
    (["--no-such-option"], "--no-such-option"),
    (["--proxy-auth", "no-colon"], "USER:PASS"),
])
def test_what_cannot_be_worked_out_is_refused_with_a_reason(args, says):
    result = pouch_env(*args, ok=False)
    assert result.exit_code != 0 and says in result.stderr and not result.stdout


# -- --key ---------------------------------------------------------------------------------------


def test_a_keys_name_is_not_its_secret_and_nothing_is_rotated(store):
    key, secret = key_service.create("alice")
    result = pouch_env("--key", "alice", ok=False)
    assert result.exit_code == 1 and not result.stdout
    assert "shown once" in result.stderr and "pouch keys rotate alice" in result.stderr
    assert key_store.get("alice").secret_hash == key.secret_hash, "never rotated behind the user's back"
    result = pouch_env("--key", "bob", ok=False)
    assert "no key named 'bob'" in result.stderr and "pouch-" in result.stderr


def test_the_demo_key_is_known_by_name(store):
    secret = run.demo_secret()
    got = variables(pouch_env("--key", "demo").stdout)
    assert got["OPENAI_API_KEY"] == secret


# -- the bundle ------------------------------------------------------------------------------------


def system_cas() -> list[str]:
    path = Path(ssl.get_default_verify_paths().openssl_cafile)
    if not path.is_file():
        pytest.skip(f"this machine has no system CA file at {path}")
    return trust._PEM.findall(path.read_text(errors="replace"))


def test_the_bundle_holds_pouchs_ca_and_the_systems_and_is_rewritten_only_on_change(isolated_home):
    got = variables(pouch_env().stdout)
    bundle, ca = Path(got["SSL_CERT_FILE"]), Path(got["NODE_EXTRA_CA_CERTS"])
    assert bundle.parent == ca.parent == isolated_home / "mitmproxy"
    text = bundle.read_text()
    assert ca.read_text().strip() in text
    assert any(pem in text for pem in system_cas())
    ssl.create_default_context(cafile=str(bundle))  # loads as a whole

    before = bundle.stat()
    assert variables(pouch_env().stdout)["SSL_CERT_FILE"] == str(bundle)
    after = bundle.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "unchanged: not rewritten"

    old = ca.read_text()
    for file in ca.parent.glob("mitmproxy-ca*"):
        file.unlink()
    trust.ensure_ca(ca.parent)  # a new CA, as after deleting the confdir's
    # from a shell that evaluated the old lines: SSL_CERT_FILE names the bundle itself
    out = subprocess.run([POUCH, "env"], env=bare_env(isolated_home, SSL_CERT_FILE=str(bundle)),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = bundle.read_text()
    assert bundle.stat().st_ino != before.st_ino, "replaced, not written over in place"
    assert ca.read_text().strip() in text and old.strip() not in text
    assert any(pem in text for pem in system_cas())


def test_a_ca_given_by_path_gets_its_bundle_under_pouch_home(isolated_home, tmp_path):
    ca = trust.ensure_ca(tmp_path / "remote-gateway")
    copy = tmp_path / "copied-ca.pem"
    copy.write_text(ca.read_text())
    got = variables(pouch_env("--ca", str(copy), "--proxy", "gw.example:8080").stdout)
    assert got["NODE_EXTRA_CA_CERTS"] == str(copy)
    bundle = Path(got["SSL_CERT_FILE"])
    assert bundle.parent == isolated_home and ca.read_text().strip() in bundle.read_text()
    assert not (isolated_home / "mitmproxy").exists(), "no CA made that the remote gateway does not have"


# -- end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with FakeOpenAI(tls_dir=tmp_path_factory.mktemp("fake-tls")) as fake:
        gateway = Gateway(tmp_path_factory.mktemp("gateway"), {"api.openai.com": fake.url}, str(fake.ca_path))
        gateway.start()
        yield gateway
        gateway.stop()


CALL = ("import openai; r = openai.OpenAI(max_retries=0).chat.completions.create("
        "model='gpt-4o-mini', messages=[{'role': 'user', 'content': 'hello from pouch env'}]); "
        "print(r.choices[0].message.content)")


@pytest.mark.parametrize("extra", [(), ("--listen-host", "0.0.0.0")], ids=["no-proxy-auth", "proxy-auth"])
def test_the_openai_sdk_configured_by_pouch_env_alone_is_answered_and_metered(gateway, extra):
    gateway.open_store()
    key, secret = key_service.create(f"env{uuid.uuid4().hex[:8]}", budget="5")
    script = 'eval "$("$POUCH" env --key "$KEY" --port "$PORT" "$@")" && exec "$PY" -c "$CALL"'
    # POUCH_HOME is the gateway's, so its confdir (and CA) is the default one
    out = subprocess.run(["bash", "-c", script, "bash", *extra], capture_output=True, text=True, timeout=60,
                         env=bare_env(gateway.home, POUCH=POUCH, KEY=secret, PORT=str(gateway.port),
                                      PY=sys.executable, CALL=CALL))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "echo: hello from pouch env"
    gateway.settled()
    rows = list(UsageRow.select().where(UsageRow.key_name == key.name))
    assert len(rows) == 1 and rows[0].model.startswith("gpt-4o-mini") and rows[0].status == 200
    assert rows[0].cost_pico > 0 and not rows[0].mock, "a paid call, metered at its price"


def test_a_bundle_folder_others_can_write_is_refused(tmp_path):
    """Whoever can write the bundle decides what every client of the shell trusts."""
    from pouch.cli import trust

    ca = trust.ensure_ca(tmp_path / "conf")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(trust.UnsafeDirectory, match="other users"):
        trust.write_bundle(ca, shared / "ca-bundle.pem")
    assert not (shared / "ca-bundle.pem").exists()
    shared.chmod(0o755)
    assert trust.write_bundle(ca, shared / "ca-bundle.pem").exists()
