"""The delivery retry policy: when the next attempt comes after failed ones, or none.

Owns the pure function of the attempt number, the schedule, ``Retry-After`` and an injected
``random.Random``. It sends nothing, reads no clock and knows nothing of the store.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# Each scheduled delay gets ±20 % jitter, so a recovering receiver is not hit all at once.
RETRY_JITTER = 0.20
# A receiver's Retry-After is honoured up to this long (a bogus value must not park events).
RETRY_AFTER_MAX_S = 6 * 3600.0


def retry_delay(
    attempts_made: int,
    schedule: Sequence[float],
    retry_after_s: float | None,
    rng: random.Random,
) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` failed ones; None: give up.

    ``schedule[k]`` is the delay before attempt ``k + 1`` (the first, ``schedule[0]``, is
    normally 0: immediate). ``Retry-After`` lengthens a delay, never shortens it.
    """
    if attempts_made >= len(schedule):
        return None
    delay = schedule[attempts_made] * rng.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, RETRY_AFTER_MAX_S))
    return delay
