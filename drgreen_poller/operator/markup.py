"""The operator page's markup basics: the style sheet, the layout, escaping, times, badges,
tables, and the small pages (sign in, refused, not found).

Owns the one rule that makes the page safe: every value that is not this package's own text goes
through ``e`` (``html.escape``, quotes included), upstream text too. No scripts at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from drgreen_poller import __version__
from drgreen_poller.operator.access import CSRF_FIELD

_STYLE = """
:root{--fg:#1d2330;--mute:#5d6779;--line:#dfe3ea;--bg:#f6f7f9;--card:#fff;--accent:#1f6feb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}
header{background:#17202e;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:16px;margin:0;font-weight:600}
header nav a{color:#c9d5ea;margin-right:14px;text-decoration:none}
header .meta{margin-left:auto;color:#9fb0c9;font-size:12px}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;
padding:14px 18px;margin:14px 0}
h2{font-size:15px;margin:0 0 10px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
.muted{color:var(--mute)}.ago{color:var(--mute);font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.s-ok,.s-delivered{background:#dcf5e3;color:#1a7f37}.s-failed,.s-refused{background:#ffe1e0;color:#b42318}
.s-pending{background:#fff3cd;color:#8a5a00}.s-delivering{background:#dbe9ff;color:#1d4ed8}
.notice{background:#e7f0ff;border:1px solid #b7cffb;padding:8px 12px;border-radius:6px}
.notice.error{background:#ffecec;border-color:#f5b5b5}
form.inline{display:inline}
form.bar{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin:6px 0 10px}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #c4cad4;border-radius:5px}
button{background:var(--accent);color:#fff;border-color:var(--accent);cursor:pointer}
button.quiet{background:#fff;color:var(--accent)}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:14px}
svg.chart{width:100%;height:auto}.chart .bar{fill:#5b8def}
.chart .high{stroke:#1b3a8a;stroke-width:2}
.chart .axis{stroke:#9aa4b2}.chart .grid{stroke:#eef0f4}.chart .tick{font-size:14px;fill:#5d6779}
figure{margin:0}figcaption{color:var(--mute);margin-bottom:4px}
pre{background:#f3f5f8;border:1px solid var(--line);padding:12px;border-radius:6px;overflow:auto}
details summary{cursor:pointer;color:var(--accent);white-space:nowrap}
time,td.num,.ago{white-space:nowrap}
.attempt{margin:4px 0 0 14px;max-width:340px;font-size:12.5px}
.excerpt{color:var(--mute);overflow-wrap:anywhere}
.scroll{overflow-x:auto}
"""


def e(value: Any) -> str:
    """``value`` as HTML text (quotes escaped too: safe in attributes)."""
    return escape("" if value is None else str(value), quote=True)


def ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stamp(iso: str | None, now: datetime) -> str:
    """An ISO time from the database, as UTC text and how long ago (or ahead) it is."""
    if not iso:
        return '<span class="muted">never</span>'
    when = parse(iso)
    return time_html(when, (now - when).total_seconds())


def time_html(when: datetime, ago_s: float) -> str:
    shown = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    relative = f"{ago(ago_s)} ago" if ago_s >= 0 else f"in {ago(ago_s)}"
    return (
        f'<time datetime="{e(when.isoformat())}">{e(shown)}</time>'
        f' <span class="ago">{e(relative)}</span>'
    )


def at(timestamp: float, now: datetime) -> str:
    """Unix seconds, as ``stamp`` shows a time."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return time_html(when, (now - when).total_seconds())


def clock_time(iso: str) -> str:
    """An attempt's start as ``14:32:05.951`` (its date is the row's; the full time is in the
    ``datetime`` attribute)."""
    return iso[11:23]


def attempt_time(iso: str) -> str:
    return f'<time datetime="{e(iso)}">{e(clock_time(iso))}</time>'


def badge(state: str) -> str:
    return f'<span class="badge s-{e(state)}">{e(state)}</span>'


def link(path: str, params: dict[str, Any], fragment: str = "") -> str:
    """A URL to ``path`` with the non-empty ``params``, escaped for an attribute."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return e(path + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else ""))


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{e(token)}">'


def table(head: Sequence[str], rows: Iterable[str], numeric: Sequence[int] = ()) -> str:
    cells = "".join(
        f"<th{' class=num' if i in numeric else ''}>{e(h)}</th>" for i, h in enumerate(head)
    )
    body = "".join(rows) or f'<tr><td colspan="{len(head)}" class="muted">none</td></tr>'
    return (
        f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody>'
        "</table></div>"
    )


def layout(title: str, body: str, *, signed_in: bool = False, csrf: str = "") -> str:
    """The whole document around ``body``."""
    logout = (
        f'<form class="inline" method="post" action="/logout">{csrf_field(csrf)}'
        '<button class="quiet" type="submit">Sign out</button></form>'
        if signed_in
        else ""
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>"
        '<header><h1>drgreen-poller</h1><nav><a href="/#holders">Holders</a>'
        '<a href="/#charts">Charts</a><a href="/#deliveries">Deliveries</a>'
        '<a href="/#events">Events</a></nav>'
        f'<span class="meta">version {e(__version__)}</span>{logout}</header>'
        f"<main>{body}</main></body></html>"
    )


def hidden(params: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in params.items() if v
    )


def login_html(csrf: str, error: str | None = None) -> str:
    """The token form shown when ``[daemon] operator_token`` is set."""
    shown = f'<p class="notice error">{e(error)}</p>' if error else ""
    body = (
        f"<section><h2>Sign in</h2>{shown}<p>This page needs the token set as"
        " <code>[daemon] operator_token</code> in the daemon's configuration.</p>"
        f'<form class="bar" method="post" action="/login">{csrf_field(csrf)}'
        '<label>token <input type="password" name="token" autocomplete="current-password"'
        ' required size="40"></label><button type="submit">Sign in</button></form></section>'
    )
    return layout("drgreen-poller: sign in", body)


def refused_html(reason: str) -> str:
    """Why the page is not shown to this request."""
    return layout(
        "drgreen-poller: refused", f"<section><h2>Refused</h2><p>{e(reason)}</p></section>"
    )


def not_found_html(what: str) -> str:
    return layout(
        "drgreen-poller: not found", f"<section><h2>Not found</h2><p>{e(what)}</p></section>"
    )
