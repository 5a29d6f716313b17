"""Numbered schema migrations, recorded in ``pouch_migrations`` and applied at start-up.

Each migration is SQL that SQLite and PostgreSQL both accept (``{pk}`` stands for the
dialect's auto-increment primary key), or one text per dialect where they differ (a tuple of
statements, not split at ';', for a PostgreSQL function). Never edit
a released migration: add the next number.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import peewee as pw

log = logging.getLogger(__name__)

def _read(name: str) -> str:
    return (Path(__file__).parent / name).read_text()


MIGRATIONS: list[tuple[int, str, str | dict]] = [
    (
        1,
        "keys, ledger, reservations, usage",
        """
        CREATE TABLE pouch_keys (
            id {pk},
            name TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            budget_pico BIGINT,
            period TEXT NOT NULL DEFAULT 'none',
            rpm INTEGER,
            tpm INTEGER,
            max_concurrent INTEGER,
            models TEXT NOT NULL DEFAULT '',
            expires_at TIMESTAMP,
            auto_renew BOOLEAN NOT NULL DEFAULT FALSE,
            mock BOOLEAN NOT NULL DEFAULT FALSE,
            revoked BOOLEAN NOT NULL DEFAULT FALSE,
            created_at TIMESTAMP NOT NULL,
            anchor TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        CREATE TABLE pouch_ledger (
            id {pk},
            key_id INTEGER NOT NULL REFERENCES pouch_keys (id),
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP,
            spent_pico BIGINT NOT NULL DEFAULT 0,
            reserved_pico BIGINT NOT NULL DEFAULT 0,
            UNIQUE (key_id, window_start)
        );
        CREATE TABLE pouch_reservations (
            id TEXT PRIMARY KEY,
            key_id INTEGER NOT NULL REFERENCES pouch_keys (id),
            ledger_id INTEGER NOT NULL REFERENCES pouch_ledger (id),
            amount_pico BIGINT NOT NULL,
            created_at TIMESTAMP NOT NULL,
            deadline TIMESTAMP NOT NULL,
            owner TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            endpoint TEXT
        );
        CREATE INDEX pouch_reservations_deadline ON pouch_reservations (deadline);
        CREATE TABLE pouch_usage (
            id {pk},
            ts TIMESTAMP NOT NULL,
            key_id INTEGER REFERENCES pouch_keys (id),
            key_name TEXT NOT NULL,
            provider TEXT,
            model TEXT,
            endpoint TEXT,
            status INTEGER,
            streamed BOOLEAN NOT NULL DEFAULT FALSE,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            cached_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_5m_tokens BIGINT NOT NULL DEFAULT 0,
            cache_write_1h_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            reasoning_tokens BIGINT NOT NULL DEFAULT 0,
            cost_pico BIGINT NOT NULL DEFAULT 0,
            latency_ms INTEGER,
            ttft_ms INTEGER,
            mock BOOLEAN NOT NULL DEFAULT FALSE,
            observed BOOLEAN NOT NULL DEFAULT FALSE,
            request_id TEXT,
            reservation_id TEXT UNIQUE,
            outcome TEXT NOT NULL DEFAULT 'ok'
        );
        CREATE INDEX pouch_usage_ts ON pouch_usage (ts);
        CREATE INDEX pouch_usage_key_ts ON pouch_usage (key_id, ts);
        """,
    ),
    (
        2,
        "usage: server-side tool calls, the amount reserved",
        """
        ALTER TABLE pouch_usage ADD COLUMN tool_calls TEXT;
        ALTER TABLE pouch_usage ADD COLUMN reserved_pico BIGINT;
        """,
    ),
    (
        3,
        "gateway instances: one live holder per name",
        """
        CREATE TABLE pouch_instances (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TIMESTAMP NOT NULL,
            heartbeat_at TIMESTAMP NOT NULL
        );
        """,
    ),
    (
        4,
        "refusals: requests pouch answered with an error (no cost)",
        """
        CREATE TABLE pouch_refusals (
            id {pk},
            ts TIMESTAMP NOT NULL,
            key_id INTEGER REFERENCES pouch_keys (id),
            provider TEXT NOT NULL,
            model TEXT,
            endpoint TEXT,
            status INTEGER NOT NULL,
            reason TEXT NOT NULL,
            message TEXT NOT NULL
        );
        CREATE INDEX pouch_refusals_ts ON pouch_refusals (ts);
        CREATE INDEX pouch_refusals_key_ts ON pouch_refusals (key_id, ts);
        """,
    ),
    (
        5,
        "open reservations: one b-tree per write",
        # Every request inserts and deletes one row here, and each index is one more page
        # written per commit. The table only ever holds the requests in flight: recovery reads
        # it whole without the deadline index, and on SQLite it is keyed by its id alone
        # (WITHOUT ROWID: no second b-tree for the primary key).
        {
            "sqlite": """
            DROP INDEX pouch_reservations_deadline;
            CREATE TABLE pouch_reservations_new (
                id TEXT PRIMARY KEY,
                key_id INTEGER NOT NULL REFERENCES pouch_keys (id),
                ledger_id INTEGER NOT NULL REFERENCES pouch_ledger (id),
                amount_pico BIGINT NOT NULL,
                created_at TIMESTAMP NOT NULL,
                deadline TIMESTAMP NOT NULL,
                owner TEXT NOT NULL,
                provider TEXT,
                model TEXT,
                endpoint TEXT
            ) WITHOUT ROWID;
            INSERT INTO pouch_reservations_new (id, key_id, ledger_id, amount_pico, created_at, deadline, owner,
                                                provider, model, endpoint)
                SELECT id, key_id, ledger_id, amount_pico, created_at, deadline, owner, provider, model, endpoint
                FROM pouch_reservations;
            DROP TABLE pouch_reservations;
            ALTER TABLE pouch_reservations_new RENAME TO pouch_reservations;
            """,
            "postgresql": "DROP INDEX pouch_reservations_deadline;",
        },
    ),
    (
        6,
        "alerts: key thresholds and webhook, the outbox of events",
        # One row per event, made in the transaction that detects it; the unique index is what
        # makes it once per threshold per key per period however many gateways settle at once
        # (ref: what else tells two events apart, e.g. an overrun's reservation).
        """
        ALTER TABLE pouch_keys ADD COLUMN alert_at TEXT;
        ALTER TABLE pouch_keys ADD COLUMN webhook TEXT;
        CREATE TABLE pouch_alerts (
            id TEXT PRIMARY KEY,
            key_id INTEGER NOT NULL REFERENCES pouch_keys (id),
            event TEXT NOT NULL,
            period_start TIMESTAMP NOT NULL,
            threshold INTEGER NOT NULL DEFAULT 0,
            ref TEXT NOT NULL DEFAULT '',
            body TEXT NOT NULL,
            created_at TIMESTAMP NOT NULL,
            state TEXT NOT NULL DEFAULT 'pending',
            due_at TIMESTAMP NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_until TIMESTAMP,
            delivered_to TEXT NOT NULL DEFAULT '[]',
            delivered_at TIMESTAMP,
            last_error TEXT,
            UNIQUE (key_id, event, period_start, threshold, ref)
        );
        CREATE INDEX pouch_alerts_due ON pouch_alerts (state, due_at);
        """,
    ),
    (
        7,
        "admin tokens: who may use the admin API, stored hashed",
        # One live token per name (the partial index): a revoked token keeps its row and its name
        # may be given again.
        """
        CREATE TABLE pouch_admin_tokens (
            id {pk},
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
            prefix TEXT NOT NULL,
            secret_hash TEXT NOT NULL UNIQUE,
            created_at TIMESTAMP NOT NULL,
            revoked_at TIMESTAMP
        );
        CREATE UNIQUE INDEX pouch_admin_tokens_live_name ON pouch_admin_tokens (name) WHERE revoked_at IS NULL;
        """,
    ),
    (
        8,
        "usage and refusals: the mitmproxy flow id",
        # What the dashboard links a request to mitmweb's view of it by (null: no flow, e.g. a
        # reservation recovered after a crash, or rows written before this migration).
        """
        ALTER TABLE pouch_usage ADD COLUMN flow_id TEXT;
        ALTER TABLE pouch_refusals ADD COLUMN flow_id TEXT;
        """,
    ),
    (
        9,
        "teams, end-user budgets, budget levels, tags and sessions",
        # A request fits every level it belongs to (the gateway's ceiling, its key's team, the
        # key, the key's end user), reserved in one transaction. The key's level stays in
        # pouch_ledger; the others are pouch_budget_ledger rows named by scope ("total",
        # "team:3", "user:5:alice"), and a reservation names those it holds (``scopes``: their
        # ids, in the order they are locked). ``end_user``: "user" is a reserved word in SQL.
        """
        CREATE TABLE pouch_teams (
            id {pk},
            name TEXT NOT NULL UNIQUE,
            budget_pico BIGINT,
            period TEXT NOT NULL DEFAULT 'none',
            rpm INTEGER,
            tpm INTEGER,
            max_concurrent INTEGER,
            models TEXT NOT NULL DEFAULT '',
            created_at TIMESTAMP NOT NULL,
            anchor TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );
        ALTER TABLE pouch_keys ADD COLUMN team_id INTEGER REFERENCES pouch_teams (id);
        ALTER TABLE pouch_keys ADD COLUMN user_budget_pico BIGINT;
        ALTER TABLE pouch_keys ADD COLUMN user_period TEXT NOT NULL DEFAULT 'none';
        ALTER TABLE pouch_keys ADD COLUMN user_rpm INTEGER;
        ALTER TABLE pouch_keys ADD COLUMN require_user BOOLEAN NOT NULL DEFAULT FALSE;
        CREATE TABLE pouch_budget_ledger (
            id {pk},
            scope TEXT NOT NULL,
            window_start TIMESTAMP NOT NULL,
            window_end TIMESTAMP,
            spent_pico BIGINT NOT NULL DEFAULT 0,
            reserved_pico BIGINT NOT NULL DEFAULT 0,
            UNIQUE (scope, window_start)
        );
        ALTER TABLE pouch_reservations ADD COLUMN scopes TEXT;
        ALTER TABLE pouch_usage ADD COLUMN team TEXT;
        ALTER TABLE pouch_usage ADD COLUMN end_user TEXT;
        ALTER TABLE pouch_usage ADD COLUMN tags TEXT;
        ALTER TABLE pouch_usage ADD COLUMN session TEXT;
        ALTER TABLE pouch_refusals ADD COLUMN team TEXT;
        ALTER TABLE pouch_refusals ADD COLUMN end_user TEXT;
        CREATE INDEX pouch_keys_team ON pouch_keys (team_id);
        """,
    ),
    (
        10,
        "alerts: the targets each event is still owed",
        # Space-separated: a fingerprint (pouch.alerts.outbox.fingerprint) of each pouch_webhook of
        # the gateway that wrote the event, and "key" for the key's own webhook. Gateways with other
        # pouch_webhook lists deliver what they know and leave the rest. NULL: written before this.
        """
        ALTER TABLE pouch_alerts ADD COLUMN owed TEXT;
        """,
    ),
    (
        11,
        "rate limits in the store: requests in flight per scope and a log of the last minutes",
        # pouch.store.limits: requests/min, tokens/min and requests in flight shared by every
        # gateway on the store. ``at`` is epoch seconds; the log is pruned past ten minutes.
        # A reservation names the scopes it holds a slot at (``slots``, one per line).
        {
            "sqlite": """
        CREATE TABLE pouch_limit_state (
            scope TEXT PRIMARY KEY,
            in_flight INTEGER NOT NULL DEFAULT 0
        ) WITHOUT ROWID;
        CREATE TABLE pouch_rate_log (
            id {pk},
            scope TEXT NOT NULL,
            at REAL NOT NULL,
            tokens BIGINT NOT NULL DEFAULT 0,
            reservation_id TEXT
        );
        CREATE INDEX pouch_rate_log_scope ON pouch_rate_log (scope, at);
        CREATE INDEX pouch_rate_log_at ON pouch_rate_log (at);
        CREATE INDEX pouch_rate_log_reservation ON pouch_rate_log (reservation_id) WHERE reservation_id IS NOT NULL;
        ALTER TABLE pouch_reservations ADD COLUMN slots TEXT;
        """,
            "postgresql": """
        CREATE TABLE pouch_limit_state (
            scope TEXT PRIMARY KEY,
            in_flight INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE pouch_rate_log (
            id {pk},
            scope TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            tokens BIGINT NOT NULL DEFAULT 0,
            reservation_id TEXT
        );
        CREATE INDEX pouch_rate_log_scope ON pouch_rate_log (scope, at);
        CREATE INDEX pouch_rate_log_at ON pouch_rate_log (at);
        CREATE INDEX pouch_rate_log_reservation ON pouch_rate_log (reservation_id) WHERE reservation_id IS NOT NULL;
        ALTER TABLE pouch_reservations ADD COLUMN slots TEXT;
        """,
        },
    ),
    (
        12,
        "PostgreSQL: a reservation in one round trip (pouch_reserve)",
        # pouch/store/reserve.sql; SQLite runs the same steps in process (nothing to create).
        {"sqlite": (), "postgresql": (_read("reserve.sql"),)},
    ),
    (
        13,
        "PostgreSQL: a settlement in one call (pouch_finish)",
        {"sqlite": (), "postgresql": (_read("finish.sql"),)},
    ),
    (
        14,
        "reservations: whether pouch answers the request itself (a mock)",
        # Recovery releases a mock's reservation instead of charging it: nothing went upstream.
        # pouch_reserve takes the flag (its old signature goes).
        {
            "sqlite": "ALTER TABLE pouch_reservations ADD COLUMN mock BOOLEAN NOT NULL DEFAULT FALSE",
            "postgresql": (
                "ALTER TABLE pouch_reservations ADD COLUMN mock BOOLEAN NOT NULL DEFAULT FALSE",
                "DROP FUNCTION IF EXISTS pouch_reserve(text, integer, timestamp, timestamp, bigint, timestamp, "
                "timestamp, text, text, text, text, jsonb, jsonb, bigint, double precision)",
                _read("reserve.sql"),
            ),
        },
    ),
]


def _primary_key(db: pw.Database) -> str:
    if isinstance(db, pw.PostgresqlDatabase):
        return "SERIAL PRIMARY KEY"
    return "INTEGER PRIMARY KEY AUTOINCREMENT"


def _statements(db: pw.Database, sql: str | dict[str, str | tuple[str, ...]]) -> list[str]:
    """A migration's statements: its text split at each ';', or, given as a tuple, each as it is
    (a function's body holds ';' of its own)."""
    if isinstance(sql, dict):
        sql = sql["postgresql" if isinstance(db, pw.PostgresqlDatabase) else "sqlite"]
    if isinstance(sql, tuple):
        return list(sql)
    return [statement for statement in sql.format(pk=_primary_key(db)).split(";") if statement.strip()]


def migrate(db: pw.Database) -> list[int]:
    """Apply every migration not yet recorded; returns the numbers applied.

    Safe when several gateways start at once: each migration runs in a transaction that
    also records it, and a concurrent duplicate fails on the primary key and is skipped.
    """
    db.execute_sql(
        "CREATE TABLE IF NOT EXISTS pouch_migrations "
        "(id INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    applied = []
    for number, name, sql in MIGRATIONS:
        done = db.execute_sql("SELECT 1 FROM pouch_migrations WHERE id = %d" % number).fetchone()
        if done:
            continue
        try:
            with db.atomic():
                for statement in _statements(db, sql):
                    db.execute_sql(statement)
                db.execute_sql(
                    "INSERT INTO pouch_migrations (id, name, applied_at) VALUES (%d, '%s', '%s')"
                    % (number, name, datetime.now(UTC).replace(tzinfo=None).isoformat(" "))
                )
        except (pw.IntegrityError, pw.OperationalError, pw.ProgrammingError):
            if not db.execute_sql("SELECT 1 FROM pouch_migrations WHERE id = %d" % number).fetchone():
                raise
            continue  # another process applied it first
        log.info("applied migration %d: %s", number, name)
        applied.append(number)
    # what the store's schema is at: code that needs a later migration's function checks it
    db.pouch_schema = db.execute_sql("SELECT MAX(id) FROM pouch_migrations").fetchone()[0] or 0
    return applied
