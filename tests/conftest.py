import pytest

from pouch.store import database


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own POUCH_HOME (and so its own default SQLite store)."""
    home = tmp_path / "pouch-home"
    monkeypatch.setenv("POUCH_HOME", str(home))
    monkeypatch.delenv("POUCH_DB", raising=False)
    return home


@pytest.fixture
def store(isolated_home):
    db = database.open_store()
    yield db
    db.close()
