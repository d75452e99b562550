"""HTTP documents: a JSON, CSV, NDJSON or Excel document (or pages of one) fetched with requests.

::

    - name: stations
      type: http
      kind: point_in_time
      options:
        url: https://api.example.com/v1/stations
        params: {region: north}
        format: json                   # json | csv | ndjson | xlsx (default: from Content-Type)
        records_path: data.items       # where the records are in a JSON document
        pagination: {type: next_link, next_path: links.next}   # or cursor / offset / none
        connect_timeout: 10s
        read_timeout: 60s
        retries: 3                     # on connection errors, 429 and 5xx (Retry-After honoured)
        backoff: 1s                    # first wait; doubles every attempt
      secrets: {token: "${STATIONS_TOKEN}"}   # sent as Authorization: Bearer <token>
      columns: [...]
      key: [station_id]

An unchanged document is not reloaded: the ETag and Last-Modified of the first page are
kept in the cursor and sent back as If-None-Match / If-Modified-Since; a 304 answer ends
the run with nothing fetched. A full refresh (``cxd run --full``) always fetches.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus, urljoin

import pandas as pd
import requests

from plugins.base import Payload, SourcePlugin
from plugins.exceptions import FetchError, PluginConfigError, RecordError
from plugins.parse import (
    FORMATS,
    guess_format,
    parse_document,
    records_at,
    seconds,
    select_columns,
)
from plugins.settings import count_problems, duration_problems

PAGINATION = ("none", "next_link", "cursor", "offset")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "cxd-http-source/0.1"

# one Session per source, kept for the life of the process so connections are reused
_sessions: dict[str, requests.Session] = {}
_sessions_lock = threading.Lock()


def session_for(source: str) -> requests.Session:
    """The requests Session of ``source`` (created on first use)."""
    with _sessions_lock:
        if source not in _sessions:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            _sessions[source] = session
        return _sessions[source]


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpSource(SourcePlugin):
    """A document fetched over HTTP(S), with retries, conditional fetch and pagination.

    Subclass it and override :meth:`request_params` or :meth:`records` to adapt an
    unusual API; the defaults cover next links, cursor tokens and offset paging.
    """

    type = "http"

    # -- settings ---------------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every problem with the URL, format, pagination, timeout and retry settings."""
        o = self.options
        problems = []
        url = o.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append("options.url is required: an http:// or https:// URL")
        if o.get("format") and o["format"] not in FORMATS:
            problems.append(f"options.format {o['format']!r} is not one of {', '.join(FORMATS)}")
        page = self.pagination
        if page.get("type", "none") not in PAGINATION:
            problems.append(
                f"options.pagination.type {page.get('type')!r} is not one of {', '.join(PAGINATION)}"
            )
        if page.get("type") == "cursor" and not page.get("cursor_path"):
            problems.append("options.pagination.cursor_path is required for cursor pagination")
        if page.get("type") == "offset" and not page.get("limit"):
            problems.append("options.pagination.limit (page size) is required for offset paging")
        problems += duration_problems(
            o, "connect_timeout", "read_timeout", "backoff", "max_retry_after"
        )
        problems += count_problems(o, "retries", 3, 0)
        problems += count_problems(self.pagination, "max_pages", 1000, 1)
        for name in ("params", "headers"):
            if not isinstance(o.get(name, {}), dict):
                problems.append(f"options.{name} must be a mapping")
        return problems

    @property
    def pagination(self) -> dict[str, Any]:
        """The pagination settings (``{"type": "none"}`` when not paged)."""
        page = self.options.get("pagination") or {"type": "none"}
        return {"type": page} if isinstance(page, str) else dict(page)

    def headers(self) -> dict[str, str]:
        """Request headers: declared ones plus the auth header from secrets."""
        headers = {str(k): str(v) for k, v in (self.options.get("headers") or {}).items()}
        headers.update({str(k): str(v) for k, v in (self.secrets.get("headers") or {}).items()})
        token = self.secrets.get("token") or self.secrets.get("api_key")
        if token:
            scheme = self.options.get("auth_scheme", "Bearer")
            name = self.options.get("auth_header", "Authorization")
            headers[name] = f"{scheme} {token}" if scheme else str(token)
        return headers

    def _auth(self):
        if self.secrets.get("password") is not None and self.options.get("username"):
            return (self.options["username"], self.secrets["password"])
        return None

    def _redact(self, text: str) -> str:
        """``text`` with every secret (also as it appears URL-encoded) replaced by ***."""
        for value in self.secrets.values():
            for secret in value.values() if isinstance(value, dict) else [value]:
                if secret:
                    for form in {str(secret), quote(str(secret), safe=""), quote_plus(str(secret))}:
                        text = text.replace(form, "***")
        return text

    # -- fetch ------------------------------------------------------------------------------

    def request(
        self, url: str, params: dict[str, Any], headers: dict[str, str]
    ) -> requests.Response:
        """One GET with retries: connection errors, 429 and 5xx are retried with backoff,
        waiting what ``Retry-After`` asks (capped by ``max_retry_after``)."""
        o = self.options
        timeout = (
            seconds(o.get("connect_timeout", "10s")),
            seconds(o.get("read_timeout", "60s")),
        )
        retries = int(o.get("retries", 3))
        backoff = seconds(o.get("backoff", "1s"))
        cap = seconds(o.get("max_retry_after", "60s"))
        session = session_for(self.spec.name)
        params = {**params, **(self.secrets.get("params") or {})}  # e.g. ?api_key=...
        problem = ""
        for attempt in range(retries + 1):
            wait = backoff * 2**attempt
            try:
                response = session.request(
                    o.get("method", "GET"),
                    url,
                    params=params,
                    headers=headers,
                    auth=self._auth(),
                    timeout=timeout,
                )
            except requests.exceptions.Timeout as exc:
                problem = f"timed out ({type(exc).__name__})"
            except requests.exceptions.ConnectionError as exc:
                problem = f"could not connect: {_root_cause(exc)}"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                problem = f"answered {response.status_code} {response.reason}"
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None:
                    wait = min(asked, cap)
            if attempt < retries:
                time.sleep(wait)
        raise FetchError(
            self._redact(
                f"source {self.spec.name!r}: GET {url} {problem}"
                f" ({retries + 1} attempt{'s' if retries else ''})"
            )
        )

    def fetch(self, cursor: Any) -> Iterator[Payload]:
        """Yield each page as received; nothing when the document has not changed."""
        url = self.options["url"]
        params = dict(self.options.get("params") or {})
        page_opts = self.pagination
        kind = page_opts.get("type", "none")
        if kind == "offset":
            params[page_opts.get("offset_param", "offset")] = int(page_opts.get("start", 0))
            params[page_opts.get("limit_param", "limit")] = int(page_opts["limit"])
        max_pages = int(page_opts.get("max_pages", 1000))
        for page in range(1, max_pages + 1):
            headers = self.headers()
            if page == 1 and self.options.get("conditional", True):
                headers.update(_conditional_headers(cursor))
            response = self.request(url, params, headers)
            if response.status_code == 304:
                return
            if response.status_code >= 400:
                raise PluginConfigError(
                    self._redact(
                        f"source {self.spec.name!r}: GET {response.url} answered"
                        f" {response.status_code} {response.reason}; check the URL and credentials"
                    )
                )
            payload = Payload(
                content=response.content,
                name=self._redact(response.url),
                media_type=response.headers.get("Content-Type", "application/octet-stream"),
                meta={
                    "page": page,
                    "status": response.status_code,
                    "etag": response.headers.get("ETag"),
                    "last_modified": response.headers.get("Last-Modified"),
                },
            )
            yield payload
            next_request = self.next_page(response, payload, url, params)
            if next_request is None:
                return
            url, params = next_request
        raise FetchError(
            f"source {self.spec.name!r}: more than {max_pages} pages"
            " (raise options.pagination.max_pages if that is expected)"
        )

    def next_page(
        self, response: requests.Response, payload: Payload, url: str, params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The URL and params of the page after ``response``, or None on the last page."""
        opts = self.pagination
        kind = opts.get("type", "none")
        if kind == "none":
            return None
        if kind == "next_link":
            link = None
            if opts.get("next_path"):
                link = _lookup(_json_body(payload), opts["next_path"])
            elif "next" in response.links:
                link = response.links["next"].get("url")
            return (urljoin(response.url, link), {}) if link else None
        if kind == "cursor":
            token = _lookup(_json_body(payload), opts["cursor_path"])
            if not token:
                return None
            return url, {**params, opts.get("cursor_param", "cursor"): token}
        limit = int(opts["limit"])
        if len(self.records(payload)) < limit:
            return None
        offset_param = opts.get("offset_param", "offset")
        return url, {**params, offset_param: int(params[offset_param]) + limit}

    # -- ingest -----------------------------------------------------------------------------

    def format_of(self, payload: Payload) -> str:
        """The payload's format: declared, else from its Content-Type or URL, else JSON."""
        return (
            self.options.get("format")
            or guess_format(payload.name.split("?")[0], payload.media_type)
            or "json"
        )

    def records(self, payload: Payload) -> pd.DataFrame:
        """Every record of one page, all fields as sent."""
        return parse_document(
            payload.content,
            self.format_of(payload),
            records_path=self.options.get("records_path"),
            sheet=self.options.get("sheet"),
            delimiter=self.options.get("delimiter", ","),
        )

    def ingest(self, payload: Payload) -> pd.DataFrame:
        """The page's records with the dataset's declared columns."""
        return select_columns(self.records(payload), self.spec, payload.name)

    def next_cursor(self, cursor: Any, payloads: list[Payload]) -> Any:
        """The first page's validators (ETag, Last-Modified) for the next conditional fetch."""
        if not payloads:
            return cursor
        meta = payloads[0].meta
        return {"etag": meta.get("etag"), "last_modified": meta.get("last_modified")}


def _conditional_headers(cursor: Any) -> dict[str, str]:
    headers = {}
    if isinstance(cursor, dict):
        if cursor.get("etag"):
            headers["If-None-Match"] = cursor["etag"]
        if cursor.get("last_modified"):
            headers["If-Modified-Since"] = cursor["last_modified"]
    return headers


def _json_body(payload: Payload) -> Any:
    try:
        return json.loads(payload.content)
    except ValueError as exc:
        raise RecordError(f"{payload.name}: pagination needs a JSON body: {exc}") from None


def _lookup(doc: Any, path: str) -> Any:
    try:
        return records_at(doc, path)
    except RecordError:
        return None


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ or exc.__context__:
        exc = exc.__cause__ or exc.__context__
    return str(exc) or type(exc).__name__
