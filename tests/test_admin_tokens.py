"""``pouch admin-tokens``: created (shown once, stored hashed), listed, revoked, on SQLite and
PostgreSQL; what the admin API then lets each token do is tests/test_admin_api.py's."""

import json

import pytest
from click.testing import CliRunner

from pouch.cli.main import cli
from pouch.domain.keys import hash_secret
from pouch.store.admin_tokens import AdminTokenRow


def pouch(*args, ok=True):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def as_json(*args):
    return json.loads(pouch(*args, "--json").stdout)


def test_lifecycle(store_url):
    db = ("--db", store_url)
    created = as_json(*db, "admin-tokens", "create", "--name", "ops")
    secret = created["token"]
    assert secret.startswith("pouch-admin-") and len(secret) == len("pouch-admin-") + 43
    assert created | {"token": None, "id": None, "created_at": None} == {
        "id": None, "name": "ops", "role": "admin", "prefix": secret[:16], "created_at": None, "revoked": False,
        "revoked_at": None, "token": None}
    viewer = as_json(*db, "admin-tokens", "create", "--name", "dash", "--role", "viewer")
    assert viewer["role"] == "viewer"
    assert [AdminTokenRow.get_by_id(t["id"]).secret_hash for t in (created, viewer)] == [
        hash_secret(secret), hash_secret(viewer["token"])]

    listed = as_json(*db, "admin-tokens", "list")
    assert [(t["name"], t["role"], t["revoked"]) for t in listed] == [("ops", "admin", False), ("dash", "viewer", False)]
    assert "token" not in listed[0] and secret not in json.dumps(listed)

    taken = pouch(*db, "admin-tokens", "create", "--name", "ops", ok=False)
    assert taken.exit_code == 1 and "an admin token named 'ops' already exists" in taken.output
    revoked = as_json(*db, "admin-tokens", "revoke", "ops")
    assert revoked["revoked"] is True and revoked["revoked_at"] and "token" not in revoked
    again = as_json(*db, "admin-tokens", "create", "--name", "ops")
    assert again["id"] != created["id"], "a revoked token's name may be given again"
    by_id = as_json(*db, "admin-tokens", "revoke", str(created["id"]))
    assert (by_id["name"], by_id["revoked_at"]) == ("ops", revoked["revoked_at"]), "revoked once, by id too"
    assert [(t["name"], t["revoked"]) for t in as_json(*db, "admin-tokens", "list")] == [
        ("ops", True), ("dash", False), ("ops", False)]


def test_the_token_is_printed_once_and_stored_only_hashed(isolated_home):
    result = pouch("admin-tokens", "create", "--name", "ops")
    secret = next(line for line in result.stdout.splitlines() if line.startswith("pouch-admin-"))
    assert "shown once" in result.stderr
    assert secret not in pouch("admin-tokens", "list").stdout
    stored = b"".join(path.read_bytes() for path in isolated_home.glob("pouch.db*"))
    assert secret.encode() not in stored and hash_secret(secret).encode() in stored


@pytest.mark.parametrize("args, message", [
    (["create", "--name", "ops", "--role", "root"], "'root' is not one of 'admin', 'viewer'"),
    (["create", "--name", "o p"], "bad token name 'o p'"),
    (["create", "--name", "42"], "bad token name '42'"),
    (["revoke", "nobody"], "no admin token named 'nobody'"),
])
def test_mistakes_are_one_clear_line(isolated_home, args, message):
    result = pouch("admin-tokens", *args, ok=False)
    assert result.exit_code != 0 and message in result.output
    assert as_json("admin-tokens", "list") == []
