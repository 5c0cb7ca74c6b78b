"""A minimal store-side receiver for drgreen-poller webhooks.

It verifies each request with the `standardwebhooks` library, records the event once per
``webhook-id`` in SQLite (deliveries are at least once: the same id may come again), marks it
stale when its ``sequence`` is not above the last one recorded for its resource (an older event
arriving late), answers 2xx at once, and leaves the real work to the store's own queue, which
acts on the events that are neither repeated nor stale.

    pip install aiohttp standardwebhooks
    DRGREEN_WEBHOOK_SECRET=whsec_... python examples/receiver.py --port 8080

Configure the daemon with a webhook sink to http://127.0.0.1:8080/drgreen/events and the
same secret.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

DB_KEY = web.AppKey("db", sqlite3.Connection)
HOOK_KEY = web.AppKey("hook", Webhook)


def open_db(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS received ("
        " webhook_id TEXT PRIMARY KEY, type TEXT NOT NULL, body TEXT NOT NULL,"
        " stale INTEGER NOT NULL DEFAULT 0,"
        " received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS latest (resource TEXT PRIMARY KEY, sequence INTEGER NOT NULL)"
    )
    return db


def record(
    db: sqlite3.Connection, webhook_id: str, event: dict[str, Any], body: str
) -> tuple[bool, bool]:
    """Record an event once; returns (new, stale). Sequences only rise per resource, ever."""
    # A resource is the holder plus the whole resource object (a strain is per country).
    resource = event["holder"] + json.dumps(event["resource"], sort_keys=True)
    with db:  # one transaction: the event and its resource's latest sequence
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT sequence FROM latest WHERE resource = ?", (resource,)).fetchone()
        stale = row is not None and event["sequence"] <= row[0]
        inserted = db.execute(
            "INSERT OR IGNORE INTO received (webhook_id, type, body, stale) VALUES (?, ?, ?, ?)",
            (webhook_id, event["type"], body, stale),
        ).rowcount
        if inserted and not stale:
            db.execute(
                "INSERT INTO latest (resource, sequence) VALUES (?, ?) ON CONFLICT (resource)"
                " DO UPDATE SET sequence = excluded.sequence",
                (resource, event["sequence"]),
            )
    return bool(inserted), stale


async def receive(request: web.Request) -> web.Response:
    body = await request.read()
    try:
        event = request.app[HOOK_KEY].verify(body, dict(request.headers))
    except WebhookVerificationError:
        return web.json_response({"error": "invalid signature"}, status=401)
    webhook_id = request.headers["webhook-id"]
    new, stale = record(request.app[DB_KEY], webhook_id, event, body.decode("utf-8"))
    # The store's real work (emails, order updates) happens elsewhere, from this table.
    shown = {"webhook_id": webhook_id, "type": event["type"], "new": new, "stale": stale}
    print(json.dumps(shown), flush=True)
    return web.Response(status=204)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--db", default="received.db", help="SQLite file (default received.db)")
    args = parser.parse_args()
    secret = os.environ.get("DRGREEN_WEBHOOK_SECRET", "")
    if not secret.startswith("whsec_"):
        print("set DRGREEN_WEBHOOK_SECRET to the sink's whsec_ secret", file=sys.stderr)
        return 2
    app = web.Application()
    app[DB_KEY] = open_db(args.db)
    app[HOOK_KEY] = Webhook(secret)
    app.router.add_post("/drgreen/events", receive)
    web.run_app(app, host=args.host, port=args.port, print=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
