"""examples/receiver.py's own rule, run over a list of events: what would it drop, and why?

The README tells receivers to deduplicate on ``webhook-id`` and to drop an event whose
``sequence`` is not above the last one of its resource. Tests check the daemon's events against
the example that does exactly that, loaded from its file (it is a script, not a module).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from drgreen_poller.events import encode


def _load() -> Any:
    path = Path(__file__).parents[1] / "examples" / "receiver.py"
    spec = importlib.util.spec_from_file_location("drgreen_example_receiver", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


receiver = _load()


def dropped_by_example_receiver(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The events the example receiver would not act on: ``("duplicate" | "stale", event)``."""
    db = receiver.open_db(":memory:")
    dropped = []
    try:
        for event in events:
            new, stale = receiver.record(db, event["id"], event, encode(event))
            if not new:
                dropped.append(("duplicate", event))
            elif stale:
                dropped.append(("stale", event))
    finally:
        db.close()
    return dropped
