"""Reading single configuration values: durations, numbers, names, URLs, and secrets.

Owns the converters (each raises ``ValueError`` with a message that reads after ``key:``), the
``Reader`` that collects problems with their key paths, and how a secret is found (inline,
``_file``, ``_env`` or ``$CREDENTIALS_DIRECTORY``). It knows no section of the file and never
puts a secret's value into a message.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from drgreen_poller.errors import SigningError
from drgreen_poller.webhook_signing import webhook_key

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{3}$")
_EVENT_GLOB_RE = re.compile(r"^[a-z0-9_.*?\[\]-]+$")

_T = TypeVar("_T")
_D = TypeVar("_D")


@dataclass(frozen=True, slots=True)
class Secret:
    """A secret value and where it came from (for messages); the value never appears in repr."""

    value: str = field(repr=False)
    source: str

    def __str__(self) -> str:
        return f"<secret from {self.source}>"


# --- the validation machinery -----------------------------------------------------------------


class Reader:
    """Collects problems while values are read; one instance per load."""

    def __init__(self, environ: Mapping[str, str], base_dir: Path) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.environ = environ
        self.base_dir = base_dir  # relative paths in the file are relative to the file

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    @contextmanager
    def table(self, path: str, value: Any, allowed: set[str]) -> Iterator[Section]:
        """Check ``value`` is a table whose keys are all in ``allowed``; yield it as a Section.

        A value that is not a table is one problem, and reads as an empty table.
        """
        if not isinstance(value, Mapping):
            self.problem(path, f"must be a table, not {type_name(value)}")
            yield Section(self, path, {})
            return
        for key in value:
            if key not in allowed:
                hint = closest(key, allowed)
                self.problem(
                    join(path, key), "unknown key" + (f" (did you mean {hint!r}?)" if hint else "")
                )
        yield Section(self, path, value)


class Section:
    """One table of the file and its key path: its values are read by key alone.

    Args:
        reader: where problems and warnings are collected.
        path: the table's key path (``sinks[1]``), which every problem is named under.
        table: the table's values.
    """

    def __init__(self, reader: Reader, path: str, table: Mapping[str, Any]) -> None:
        self.reader = reader
        self.path = path
        self.table = table

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def where(self, key: str) -> str:
        """The key path of ``key`` in this table."""
        return join(self.path, key)

    def problem(self, key: str | None, message: str) -> None:
        """A problem with ``key`` of this table (None: with the table as a whole)."""
        self.reader.problem(self.path if key is None else self.where(key), message)

    def get(self, key: str, convert: Callable[[Any], _T], default: _D) -> _T | _D:
        """``convert(table[key])``, or ``default`` when absent; a ValueError becomes a problem."""
        if key not in self.table:
            return default
        try:
            return convert(self.table[key])
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def required_name(self) -> str:
        """The table's ``name``: required, 1-64 letters, digits, '-', '_' or '.'."""
        name = self.get("name", string, "")
        if "name" not in self.table:
            self.problem("name", "missing")
        elif not NAME_RE.match(name):
            self.problem("name", f"{name!r} must be 1-64 letters, digits, '-', '_' or '.'")
        return name


def check_unique_names(r: Reader, path: str, names: list[str]) -> None:
    """Each name of the array of tables at ``path`` is used once."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name and name in seen:
            r.problem(
                f"{path}[{index}].name", f"duplicate name {name!r} (also {path}[{seen[name]}])"
            )
        seen.setdefault(name, index)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def type_name(value: Any) -> str:
    names = {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "an array",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


def closest(key: str, allowed: set[str]) -> str | None:
    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.7)
    return matches[0] if matches else None


# --- converters (raise ValueError with a message that reads after "key: ") ---------------------


def duration(value: Any) -> float:
    """Seconds from ``"90s"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"250ms"`` or a number."""
    if isinstance(value, bool):
        raise ValueError(
            f'must be a duration like "90s" or a number of seconds, not {type_name(value)}'
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION_RE.match(value)):
        seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    else:
        raise ValueError(f'{value!r} is not a duration (use e.g. "90s", "30m", "1h", "7d")')
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {type_name(value)}")
    return value


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {type_name(value)}")
    return value


def number(
    minimum: float, maximum: float | None = None, *, integer: bool = False
) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (integer and not isinstance(value, int))
        ):
            raise ValueError(
                f"must be {'an integer' if integer else 'a number'}, not {type_name(value)}"
            )
        if value < minimum or (maximum is not None and value > maximum):
            bound = (
                f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            )
            raise ValueError(f"must be {bound}, not {value}")
        return value

    return convert


def choice(*options: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}; got {value!r}")
        return str(value)

    return convert


def string_list(item: Callable[[Any], str]) -> Callable[[Any], tuple[str, ...]]:
    def convert(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ValueError(f"must be an array, not {type_name(value)}")
        items = tuple(item(v) for v in value)
        repeated = sorted({v for v in items if items.count(v) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} appears more than once")
        return items

    return convert


def order_status(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Z_]+", value):
        raise ValueError(f'{value!r} is not an orderStatus value such as "DELIVERED"')
    return value


def country(value: Any) -> str:
    if not isinstance(value, str) or not _COUNTRY_RE.match(value):
        raise ValueError(f'{value!r} is not an ISO 3166-1 alpha-3 code such as "GBR"')
    return value


def event_glob(value: Any) -> str:
    if not isinstance(value, str) or not value or not _EVENT_GLOB_RE.match(value):
        raise ValueError(f'{value!r} is not an event pattern such as "order.*"')
    return value


def http_url(value: Any) -> str:
    text = string(value)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http(s) URL")
    return text


def listen_address(value: Any) -> str:
    text = string(value)
    if text == "":
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'{text!r} is not HOST:PORT ("" disables the listener)')
    return text


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this machine (loopback address or ``localhost``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- secrets -----------------------------------------------------------------------------------


def read_text_file(path: Path) -> str:
    """The UTF-8 text of ``path``; ``ValueError`` says why not, naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no such file: {path}") from None
    except PermissionError:
        raise ValueError(f"cannot read {path}: permission denied") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def read_secret_file(path_text: str) -> str:
    path = Path(path_text)
    value = read_text_file(path).strip()
    if not value:
        raise ValueError(f"{path} is empty")
    return value


def secret_values(section: Section, key: str) -> list[Secret] | None:
    """The secret(s) given under ``key``, ``key_file`` or ``key_env``; None when none is given."""
    r = section.reader
    ways = [k for k in (key, f"{key}_file", f"{key}_env") if k in section]
    if len(ways) > 1:
        section.problem(None, f"give only one of {', '.join(ways)}")
        return []
    if not ways:
        return None
    way = ways[0]
    raw = section.table[way]
    items = raw if isinstance(raw, list) else [raw]
    secrets: list[Secret] = []
    for index, item in enumerate(items):
        where = section.where(way) + (f"[{index}]" if isinstance(raw, list) else "")
        if not isinstance(item, str) or not item:
            r.problem(where, f"must be a non-empty string, not {type_name(item)}")
            continue
        try:
            secrets.append(_resolve_secret(r, way, key, item, where))
        except ValueError as exc:
            r.problem(where, str(exc))
    return secrets


def _resolve_secret(r: Reader, way: str, key: str, item: str, where: str) -> Secret:
    if way.endswith("_file"):
        return Secret(read_secret_file(str(r.base_dir / item)), f"file {item}")
    if way.endswith("_env"):
        value = r.environ.get(item, "").strip()
        if not value:
            raise ValueError(f"environment variable {item} is not set or empty")
        return Secret(value, f"environment variable {item}")
    r.warnings.append(f"{where}: secret written inline; prefer {key}_file or {key}_env")
    return Secret(item, "inline")


def systemd_credential(r: Reader, name: str) -> Secret | None:
    """systemd's ``LoadCredential=``: ``$CREDENTIALS_DIRECTORY/<name>``, when present."""
    directory = r.environ.get(CREDENTIALS_ENV)
    if not directory:
        return None
    path = Path(directory) / name
    if not path.exists():
        return None
    return Secret(read_secret_file(str(path)), f"credential {name}")


def one_secret(section: Section, key: str, credential: str) -> Secret:
    """The one secret given under ``key`` (or its ``_file``/``_env``), else the credential."""
    found = secret_values(section, key)
    if found is None:
        try:
            cred = systemd_credential(section.reader, credential)
        except ValueError as exc:
            section.problem(None, f"credential {credential}: {exc}")
            return Secret("", "missing")
        if cred is None:
            section.problem(
                key,
                f"missing: set {key}_file, {key}_env or {key} "
                f"(or provide the systemd credential {credential})",
            )
            return Secret("", "missing")
        return cred
    if len(found) > 1:
        section.problem(key, "give one value, not an array")
    return found[0] if found else Secret("", "missing")


def is_whsec(value: str) -> bool:
    """Whether ``value`` is ``whsec_`` + standard base64 of 24 to 64 bytes."""
    try:
        return 24 <= len(webhook_key(value)) <= 64
    except SigningError:
        return False
