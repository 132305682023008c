"""The kiosk's head-office client (requests): batch upload and reference download.

At-least-once on the wire, exactly-once in effect: the caller advances its watermark only to
what the server acknowledged; the server stores each (kiosk, seq) once. Failures are exceptions:
`Retryable` (no connection, timeout, 5xx, 429 with Retry-After) or `Permanent` (4xx: the batch or
the credentials are wrong and retrying the same bytes will not help).
"""

from __future__ import annotations

import gzip
import json
import queue
import random
import threading
import time
from typing import Any, NamedTuple

import requests

from sync.wire.errors import HeadOfficeError

GZIP_OVER = 16 * 1024


class SyncError(HeadOfficeError):
    """A sync with head office failed: root of the client's errors."""


class Retryable(SyncError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(SyncError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def backoff(
    attempt: int,
    retry_after: float | None,
    rng: random.Random,
    base: float = 1.0,
    ceiling: float = 300.0,
) -> float:
    """Seconds to wait before attempt `attempt + 1`: the server's Retry-After when it gave one,
    else exponential with full jitter, never above the ceiling."""
    if retry_after is not None:
        return min(max(0.0, retry_after), ceiling)
    return rng.uniform(0, min(ceiling, base * 2**attempt))


class Ack(NamedTuple):
    """Head office's answer to an upload: the highest entry it holds of this kiosk, and that
    entry's hash as it stored it."""

    seq: int
    hash: str | None


def within(seconds: float, call: Any, session: requests.Session) -> Any:
    """`call()`'s result if it comes within `seconds`, else Retryable (the call goes on in its
    own thread until its socket times out; its session is closed, so nothing reuses it)."""
    done: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            done.put((True, call()))
        except BaseException as err:  # handed to the caller, not lost in the thread
            done.put((False, err))

    threading.Thread(target=run, name="head-office-call", daemon=True).start()
    try:
        ok, value = done.get(timeout=seconds)
    except queue.Empty:
        session.close()
        raise Retryable(f"head office's answer did not come within {seconds:g} s") from None
    if not ok:
        raise value
    return value


class SyncClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        kiosk_id: str,
        *,
        timeout: tuple[float, float] = (3.05, 15.0),
        session: requests.Session | None = None,
        verify: bool | str = True,
        version: str | None = None,
        journal_schema: str | None = None,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.kiosk_id = kiosk_id
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.verify = verify  # TLS verification stays on; a CA bundle path may be given
        # what the kiosk runs, said with every request for the fleet pages
        if version:
            self.session.headers["X-Kiosk-Version"] = version
        if journal_schema:
            self.session.headers["X-Kiosk-Journal-Schema"] = journal_schema

    def fork(self) -> SyncClient:
        """The same head office and credentials on a session of its own (for another thread:
        a requests session is not shared between threads)."""
        other = SyncClient.__new__(SyncClient)
        other.base, other.kiosk_id, other.timeout = self.base, self.kiosk_id, self.timeout
        other.verify = self.verify
        other.session = requests.Session()
        other.session.headers.update(self.session.headers)
        return other

    def tell(self, backlog: int, oldest: str | None) -> None:
        """What this kiosk has not delivered yet (and the journal time of the oldest), sent
        with every request for head office's fleet page."""
        self.session.headers["X-Kiosk-Backlog"] = str(max(0, backlog))
        self.session.headers["X-Kiosk-Backlog-Since"] = oldest or ""

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        try:
            resp = self.session.request(method, self.base + path, verify=self.verify, **kw)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise Retryable(f"head office not reachable: {err}") from err
        if resp.status_code == 429 or resp.status_code >= 500:
            after = resp.headers.get("Retry-After")
            raise Retryable(
                f"head office answered {resp.status_code}",
                float(after) if after and after.replace(".", "", 1).isdigit() else None,
            )
        if resp.status_code >= 400 and resp.status_code != 304:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise Permanent(f"head office refused ({resp.status_code}): {detail}", resp.status_code)
        return resp

    def health(self) -> float:
        """Round-trip time of GET /v1/health in seconds (raises SyncError when unreachable)."""
        start = time.perf_counter()
        self._request("GET", "/v1/health", timeout=(2.0, 5.0))
        return time.perf_counter() - start

    def release(self) -> dict[str, Any] | None:
        """The release head office wants this kiosk to run (GET /v1/release), or None."""
        resp = self._request("GET", "/v1/release")
        if resp.status_code == 204:
            return None
        try:
            answer = resp.json()
            if not isinstance(answer, dict):
                raise ValueError
            return answer
        except ValueError as err:
            raise Retryable(f"unexpected answer from head office: {resp.text[:200]}") from err

    def download(self, path: str, out: Any, offset: int, limit: int) -> int:
        """Append the release file at `path` to `out` from byte `offset` on (HTTP Range), never
        more than `limit` bytes in all (Permanent beyond it); returns the bytes written."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._request("GET", path, headers=headers, stream=True)
        with resp:
            if offset and resp.status_code != 206:
                raise Permanent(f"head office did not resume at byte {offset} "
                                f"({resp.status_code})", resp.status_code)  # fmt: skip
            got = 0
            try:
                for chunk in resp.iter_content(1 << 16):
                    got += len(chunk)
                    if offset + got > limit:
                        raise Permanent(f"the release file is larger than the {limit} bytes "
                                        "signed", 413)  # fmt: skip
                    out.write(chunk)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as err:
                raise Retryable(f"download broken off after {got} bytes: {err}") from err
            return got

    def upload(self, batch: list[dict[str, Any]]) -> int:
        """Send entries (as stored); returns the highest sequence number head office holds."""
        return self.upload_ack(batch).seq

    def upload_ack(self, batch: list[dict[str, Any]]) -> Ack:
        """Send entries (as stored); returns the highest sequence number head office holds,
        with that entry's hash as head office stored it (None from a head office that does
        not say)."""
        body = json.dumps({"kiosk_id": self.kiosk_id, "entries": batch}).encode()
        headers = {"Content-Type": "application/json"}
        if len(body) > GZIP_OVER:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        resp = self._request("POST", "/v1/entries", data=body, headers=headers)
        try:
            answer = resp.json()
            hash_ = answer.get("hash")
            return Ack(int(answer["acked"]), str(hash_) if hash_ is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise Retryable(f"unexpected answer from head office: {resp.text[:200]}") from err

    def claim(self, key: str, timeout: tuple[float, float] | None = None,
              written: int | None = None,
              deadline: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Take over the key's open credits for this kiosk; returns those it now holds."""
        return list(self.claim_answer(key, timeout, written, deadline)["credits"])

    def claim_answer(self, key: str, timeout: tuple[float, float] | None = None,
                     written: int | None = None, deadline: float | None = None,
                     log: list[tuple[int, str]] | None = None) -> dict[str, Any]:  # fmt: skip
        """The whole answer to a claim: `credits` (those this kiosk now holds) and, when head
        office wants to see the key's log, `check` (the write numbers it asks about).
        `written`: the key's write count as read at insertion (head office checks what was
        reported written on the key against it); `log`: the key's log as read here, (write
        number, transaction id) each. `deadline`: seconds for the whole answer (a customer
        waits for it): an answer that trickles in is given up then (Retryable), as `timeout`
        bounds each read only."""
        body: dict[str, Any] = {"key": key}
        if written is not None:
            body["written"] = written
        if log is not None:
            body["log"] = [{"no": no, "txid": txid} for no, txid in log]
        call = lambda: self._request(  # noqa: E731
            "POST", "/v1/credits/claim", json=body, timeout=timeout or self.timeout)
        resp = call() if deadline is None else within(deadline, call, self.session)
        try:
            answer = dict(resp.json())
            answer["credits"] = list(answer["credits"])
            return answer
        except (ValueError, KeyError, TypeError) as err:
            raise Retryable(f"unexpected answer from head office: {resp.text[:200]}") from err

    def reference(
        self, etag: str | None = None, since: int | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """(ETag, data); data is None when unchanged since `etag`. `since`: the reference
        version held here: only the keys and debts changed after it come (data["since"] says
        whether head office sent a change list or, None, the whole list)."""
        headers = {"If-None-Match": etag} if etag else {}
        path = "/v1/reference" if since is None else f"/v1/reference?since={int(since)}"
        resp = self._request("GET", path, headers=headers)
        if resp.status_code == 304:
            return etag, None
        try:
            return resp.headers.get("ETag"), dict(resp.json())
        except ValueError as err:
            raise Retryable(f"unexpected answer from head office: {resp.text[:200]}") from err
