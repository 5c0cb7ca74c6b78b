"""The state database's schema: numbered migrations, applied in order, keyed on ``user_version``.

Owns only the SQL that creates and changes tables and indexes; ``connection`` applies it at open
(each migration in one transaction, ``PRAGMA user_version`` set to its number). A migration is
never edited once released: a change is a new one appended. It must not hold queries.
"""

from __future__ import annotations

from drgreen_poller.store.lineage import LINEAGE_MIGRATION

MIGRATIONS: tuple[str, ...] = (
    # 1: the polling state and the outbox
    """
    CREATE TABLE holders (
        name TEXT PRIMARY KEY,
        added_at TEXT NOT NULL,
        unauthorized_since TEXT
    );
    CREATE TABLE tier_runs (
        holder TEXT NOT NULL,
        tier TEXT NOT NULL,
        seeded_at TEXT,
        last_attempt_at TEXT,
        last_success_at TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_due_at REAL,
        PRIMARY KEY (holder, tier)
    );
    CREATE TABLE entities (
        holder TEXT NOT NULL,
        key TEXT NOT NULL,
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        country TEXT,
        tier TEXT,
        snapshot TEXT NOT NULL,
        object TEXT,
        sequence INTEGER NOT NULL DEFAULT 0,
        created_at TEXT,
        first_seen_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (holder, key)
    ) WITHOUT ROWID;
    CREATE INDEX entities_by_tier ON entities (holder, tier) WHERE tier IS NOT NULL;
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        holder TEXT NOT NULL,
        resource_key TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        observed_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX events_by_time ON events (observed_at);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL REFERENCES events (id),
        sink TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
        resource_key TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        last_outcome TEXT
    );
    CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
    CREATE INDEX deliveries_by_resource ON deliveries (sink, resource_key, sequence);
    """,
    # 2: the delivery attempt log
    """
    CREATE TABLE attempts (
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        attempt INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        duration_ms REAL NOT NULL,
        ok INTEGER NOT NULL,
        status INTEGER,
        error_class TEXT,
        response_excerpt TEXT,
        PRIMARY KEY (delivery_id, attempt)
    );
    CREATE INDEX deliveries_by_event ON deliveries (event_id);
    CREATE INDEX deliveries_by_state_time ON deliveries (state, updated_at);
    """,
    # 3: a requeued delivery restarts its retry schedule but keeps numbering its attempts
    """
    ALTER TABLE deliveries ADD COLUMN schedule_offset INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: where the state came from, and the floor under every new sequence (lineage.py)
    LINEAGE_MIGRATION,
    # 5: long tier runs in progress, for `status` (progress.py)
    """
    CREATE TABLE sweep_progress (
        holder TEXT NOT NULL,
        tier TEXT NOT NULL,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        pages INTEGER NOT NULL,
        records INTEGER NOT NULL,
        expected_records INTEGER,
        PRIMARY KEY (holder, tier)
    );
    """,
    # 6: the backlog every scrape reads (outbox.py _UNDELIVERED_SQL repeats this WHERE word for
    # word, as SQLite needs to use a partial index). Rows in flight (`delivering`, at most the
    # claimed ones) are left out so that a delivery's life costs two index writes, not four.
    """
    CREATE INDEX deliveries_owed ON deliveries (state, sink, created_at)
        WHERE state IN ('pending', 'failed');
    """,
    # 7: due rows are claimed a sink at a time, and each sink's earliest due one is looked up
    # (claims.py _CHOOSE_SQL, _NEXT_OF_SINK_SQL). Pending rows only, so a delivery's life costs
    # two index writes here, where the index it replaces (every state) cost six.
    """
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_pending_by_sink ON deliveries (sink, next_attempt_at)
        WHERE state = 'pending';
    """,
)
