"""The exception tree of drgreen-poller; every error the package raises on purpose is one of these.

Foreign exceptions (aiohttp, asyncio timeouts, JSON decoding) are translated into this tree once,
at the module boundary that meets them, with ``raise ... from exc``. This module holds no logic
beyond formatting::

    DrGreenError
    ├── ConfigError                  invalid configuration or CLI input (exit code 2)
    ├── SigningError                 a key that cannot sign, a value that cannot be canonicalised
    ├── UpstreamError                anything the Dr Green API answered or failed to answer
    │   ├── UpstreamTransient        worth retrying at the next poll: 5xx, 429, timeouts,
    │   │   │                        connection errors, malformed bodies; carries retry_after_s
    │   │   ├── UpstreamRateLimited  429
    │   │   ├── UpstreamTimeout      no complete answer within the request timeout
    │   │   ├── UpstreamUnavailable  connection refused or reset, DNS failure
    │   │   └── UpstreamMalformed    a 2xx whose body is not the JSON envelope we expect
    │   └── UpstreamRejected         retrying the same request fails the same way
    │       ├── UpstreamUnauthorized 401/403: key revoked, wrong key or wrong signature
    │       ├── UpstreamNotFound     404, a 500 whose message says "not found", orderDetails null
    │       └── UpstreamClientBug    400, 409 and other 4xx: our request was wrong
    ├── StoreError                   SQLite state could not be read or written
    │   ├── StateLost                the database file was deleted or replaced while open
    │   └── StateLocked              another daemon holds the state database's lock
    └── ConcurrentUpdate             another writer moved an entity on during a poll: redo it
        └── StaleTier                another connection committed since a tier was read

A sink that cannot take an event raises nothing: it answers an ``Outcome`` (``sinks.py``), which
the delivery worker records as an attempt and retries on its schedule.
"""

from __future__ import annotations


class DrGreenError(Exception):
    """Base of every error drgreen-poller raises on purpose."""


class ConfigError(DrGreenError):
    """The configuration or a command-line argument is invalid.

    Args:
        problems: one human-readable line per problem, each naming the key path.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class SigningError(DrGreenError):
    """A key cannot be loaded or a value cannot be put into canonical form."""


class UpstreamError(DrGreenError):
    """The Dr Green API failed a request.

    Args:
        message: what went wrong, safe to log (never a response body with customer data).
        status: the HTTP status, when there was a response.
        endpoint: the route template, e.g. ``GET /dapp/orders/{orderId}``.
    """

    def __init__(self, message: str, *, status: int | None = None, endpoint: str = "") -> None:
        self.message = message
        self.status = status
        self.endpoint = endpoint
        where = f" ({endpoint})" if endpoint else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{code}{message}{where}")


class UpstreamTransient(UpstreamError):
    """A failure worth retrying later; ``retry_after_s`` is the server's hint, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        endpoint: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, status=status, endpoint=endpoint)
        self.retry_after_s = retry_after_s


class UpstreamRateLimited(UpstreamTransient):
    """HTTP 429: the server asks us to slow down."""


class UpstreamTimeout(UpstreamTransient):
    """No complete response within the request timeout."""


class UpstreamUnavailable(UpstreamTransient):
    """The connection could not be made or was cut."""


class UpstreamMalformed(UpstreamTransient):
    """A response whose body is not the JSON we expect (truncated, HTML, wrong shape)."""


class UpstreamRejected(UpstreamError):
    """A failure that repeating the same request will not fix."""


class UpstreamUnauthorized(UpstreamRejected):
    """HTTP 401/403: the key was revoked, is wrong, or the signature did not verify."""


class UpstreamNotFound(UpstreamRejected):
    """The resource does not exist or is not visible to this holder."""


class UpstreamClientBug(UpstreamRejected):
    """HTTP 400, 409 or another 4xx: the request itself was wrong."""


class StoreError(DrGreenError):
    """The SQLite state could not be read or written."""


class StateLost(StoreError):
    """The state database file was deleted or replaced under a running process."""


class StateLocked(StoreError):
    """Another drgreen-poller holds the state database's lock (one daemon per SQLite state;
    ``poll-once`` beside daemons sharing PostgreSQL)."""


class LeaseLost(DrGreenError):
    """This instance no longer holds the lease of a holder (another instance took it, or it
    expired while this one was paused): the write was refused, nothing of it committed."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"the lease of holder {holder} moved to another instance")
        self.holder = holder


class ConcurrentUpdate(DrGreenError):
    """Another writer changed an entity while a poll was detecting its changes; poll again."""


class StaleTier(ConcurrentUpdate):
    """Another connection committed after the tier's entities this poll compared with were read
    (kept in memory): nothing was written; the poll is done again from the database.

    Args:
        data_version: SQLite's ``PRAGMA data_version`` as the commit found it.
    """

    def __init__(self, data_version: int) -> None:
        super().__init__(
            f"the state database changed under this poll (data_version {data_version})"
        )
        self.data_version = data_version
