"""The reference head-office server (FastAPI over SQLAlchemy; SQLite by default, PostgreSQL by URL).

Wire protocol v1, JSON:
  POST /v1/entries    a batch of one kiosk's journal entries; each is stored once (kiosk id +
                      sequence number); the hash chain must continue the stored one: a gap or a
                      fork is refused (409, nothing stored) and an entry whose hash does not
                      match its content, with the kiosk's chain secret once its entries are
                      keyed, too (400); each raises an alarm for the operator, once however
                      often the kiosk retries it. An entry no kiosk journals is refused too
                      (unknown kind, an amount signed as its kind does not allow, an unknown
                      currency, a time that is not one, `data` that is not a JSON object: 422;
                      a time before 2000-01-01 or more than 24 h ahead of head office's clock:
                      422 and an alarm for the operator); a body over 4 MiB, or over
                      16 MiB unpacked, gets 413. An empty batch asks what head office holds.
                      The answer acknowledges the highest stored sequence number with its hash
                      (the kiosk's anchor), and lists under `refused` the entries the credit
                      book did not act on (`track_credits`).
  GET  /v1/reference  what a kiosk needs offline, with an ETag (unchanged data: 304): key status,
                      open debts, the pending credits this kiosk holds (it may write them
                      offline), and the site settings (limits, fee) for this kiosk.
  POST /v1/credits/claim  a key is at this kiosk: take over its free open credits under a
                      lease, so that exactly one kiosk writes each; answers the credits granted.
Pending credits come from the kiosks' own entries (held by the kiosk that took the money until
another claims them) and from the admin (`credit`); a `pending_written` entry closes one.
Kiosks authenticate with a per-kiosk bearer token and can only write as themselves.
"""


from __future__ import annotations

import logging
import re
import secrets
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from sqlalchemy import (
    Engine,
    Table,
    false,
    func,
    insert,
    select,
    update,
)
from starlette.concurrency import run_in_threadpool

from sync import billing
from sync.api.doorman import Doorman
from sync.book.chain import ChainRefused, check_hash
from sync.book.credits import (
    check_closes,
    credit_out,
    grant,
    reopen_contradicted,
    track_credits,
    unconfirmed,
)
from sync.book.releases import target, track_releases
from sync.store import audit
from sync.store.tables import (
    alarm_once,
    api_tokens,
    bump_version,
    credits,
    entries,
    kiosks,
    ref_debts,
    ref_keys,
    ref_version,
    releases,
    settings,
    token_digest,
)
from sync.wire.models import (
    LEASE_SECONDS,
    MAX_BODY,
    MAX_UNPACKED,
    Batch,
    ClaimIn,
    EntryIn,
    journal_time,
    time_wrong,
)
from sync.wire.protocol import GENESIS

log = logging.getLogger(__name__)

#: a version or schema revision a kiosk says (X-Kiosk-Version, X-Kiosk-Journal-Schema)
VERSION_TEXT = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+~_-]{0,39}")


def mount(app: FastAPI, engine: Engine, *, lease_seconds: int = LEASE_SECONDS,
          release_folder: Path | None = None) -> None:  # fmt: skip
    """The wire protocol's routes (kiosks and the utility's systems) on `app`; release files
    are served from `release_folder`."""
    doorman = Doorman()

    def token_of(authorization: str | None) -> str | None:
        header = authorization or ""
        return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None

    def refuse(request: Request, token: str | None, required: str) -> HTTPException:
        """401 with `required`, counted against the client's address (429 after too many). A
        token that is right is taken whatever else came from its address (kiosks behind one
        NAT, a console whose passwords are being guessed): a token is 192 random bits, so
        the count slows no guessing that could succeed; it keeps the noise down."""
        who = request.client.host if request.client else "?"
        doorman.check(who)  # too many failed already: 429
        doorman.failed(who)
        return HTTPException(401, required if token is None else f"unknown token: {required}")

    def bearer(authorization: str | None, request: Request, table: Table, *cols: Any,
               required: str) -> Any:  # fmt: skip
        """The row of `table` whose token the request bears (`cols` of it), or `refuse`."""
        token = token_of(authorization)
        if token is not None:
            with engine.connect() as conn:
                row = conn.execute(select(*cols).where(
                    table.c.token_sha256 == token_digest(token))).first()  # fmt: skip
            if row is not None:
                return row
        raise refuse(request, token, required)

    def kiosk_of(authorization: str | None, request: Request) -> str:
        """The kiosk whose token the request bears, its contact noted in the same statement
        (one UPDATE ... RETURNING: the token found and the row written at once), or `refuse`."""
        token = token_of(authorization)
        seen: dict[str, Any] = {"last_contact": datetime.now(UTC).isoformat()}
        said = request.headers.get("x-kiosk-backlog", "")
        if said.isdigit():  # the fleet page's backlog and its age, as the kiosk says them
            since = request.headers.get("x-kiosk-backlog-since", "")
            known = int(said) > 0 and journal_time(since)  # anything else: not stored
            seen |= {"backlog": min(int(said), 2**31 - 1),
                     "backlog_since": since if known else None}  # fmt: skip
        for header, column in (("x-kiosk-version", "version"),
                               ("x-kiosk-journal-schema", "journal_schema")):  # fmt: skip
            said = request.headers.get(header, "")
            if said and VERSION_TEXT.fullmatch(said):  # what the fleet pages show: text only
                seen[column] = said
        if token is not None:
            with engine.begin() as conn:
                mine = kiosks.c.token_sha256 == token_digest(token)
                row = conn.execute(update(kiosks).where(mine).values(**seen)
                                   .returning(kiosks.c.kiosk_id)).first()  # fmt: skip
            if row is not None:
                return str(row.kiosk_id)
        raise refuse(request, token, "a kiosk's bearer token is required")

    def system_of(authorization: str | None, request: Request, role: str) -> str:
        """The name of the utility's system behind a bearer token of `role`."""
        row = bearer(authorization, request, api_tokens, api_tokens.c.name, api_tokens.c.role,
                     required="a billing system's bearer token is required")  # fmt: skip
        if row.role != role:
            raise HTTPException(403, f"this token is for {row.role}, not {role}")
        return str(row.name)

    @app.get("/v1/billing/payments")
    def billing_payments(
        request: Request,
        since: date,
        until: date | None = None,
        format: Literal["csv", "json"] = "csv",  # noqa: A002 (the query parameter's name)
        amounts: Literal["minor", "text"] = "minor",
        tz: str = "Europe/Berlin",
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        """Every payment of those local days for the billing system (as `sync.admin export
        payments`)."""
        system = system_of(authorization, request, "billing")
        if until is not None and until < since:
            raise HTTPException(422, "until is before since")
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise HTTPException(422, f"unknown time zone {tz!r}") from None
        body = billing.payments_text(engine, since, until, zone, format, amounts)
        log.info("billing: %s fetched payments %s..%s", system, since, until or since)
        audit.entry(engine, system, "export", f"payments {since}..{until or since} ({format}, "
                    f"{tz})", via="api", target="export payments")  # fmt: skip
        media = "text/csv; charset=utf-8" if format == "csv" else "application/json"
        return Response(body, media_type=media)

    @app.get("/v1/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.post(
        "/v1/entries",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": Batch.model_json_schema()}},
                "description": "May be sent with Content-Encoding: gzip.",
            }
        },
    )
    async def upload(
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        content_encoding: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        kiosk_id = await run_in_threadpool(kiosk_of, authorization, request)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            raise HTTPException(413, f"body over {MAX_BODY} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise HTTPException(413, f"body over {MAX_BODY} bytes")
        # unpacking, checking and storing block: off the event loop
        return await run_in_threadpool(take_batch, kiosk_id, bytes(raw), content_encoding)

    def take_batch(kiosk_id: str, raw: bytes, encoding: str | None) -> dict[str, Any]:
        if encoding == "gzip":
            raw = gunzip_capped(raw, MAX_UNPACKED)
        try:
            batch = Batch.model_validate_json(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise HTTPException(400, f"malformed batch: {where}: {first['msg']}") from None
        if batch.kiosk_id != kiosk_id:
            raise HTTPException(403, f"this token writes as {kiosk_id}, not {batch.kiosk_id}")
        for e in batch.entries:
            wrong = e.meaning()
            if wrong:
                raise HTTPException(422, f"entry {e.seq}: {wrong}")
        now = datetime.now(UTC)
        for e in batch.entries:
            wrong = time_wrong(e.ts, now)
            if wrong:  # a kiosk's clock gone wrong: the operator hears of it (once per entry)
                with engine.begin() as conn:
                    alarm_once(conn, kiosk_id, e.seq, f"entry refused: {wrong}", "clock")
                raise HTTPException(422, f"entry {e.seq}: {wrong}")
        refused: list[dict[str, Any]] = []
        acked, last_hash = store(kiosk_id, batch.entries, refused)
        answer: dict[str, Any] = {"acked": acked, "hash": last_hash}
        return {**answer, "refused": refused} if refused else answer

    def store(
        kiosk_id: str, batch: list[EntryIn], refused: list[dict[str, Any]]
    ) -> tuple[int, str]:
        """Check the whole batch against the stored chain, then insert the new part at once.
        What the credit book refuses of it (`track_credits`) is listed in `refused`. A batch
        that does not continue the chain (a fork, a gap, an entry whose hash does not verify)
        stores nothing and raises an alarm naming the kiosk and the entry, once however often
        the kiosk sends it again."""
        try:
            return store_chain(kiosk_id, batch, refused)
        except ChainRefused as no:
            with engine.begin() as conn:
                alarm_once(conn, kiosk_id, no.seq, f"upload refused: {no.text}", "chain")
            raise HTTPException(no.status, no.text) from None

    def store_chain(
        kiosk_id: str, batch: list[EntryIn], refused: list[dict[str, Any]]
    ) -> tuple[int, str]:
        with engine.begin() as conn:  # all or nothing
            # One upload per kiosk at a time: a second one waits here and then sees the first.
            # The kiosk's row (locked) and its newest stored entry in one statement.
            newest = (select(func.max(entries.c.seq)).where(entries.c.kiosk_id == kiosk_id)
                      .scalar_subquery())  # fmt: skip
            kiosk = conn.execute(
                select(kiosks.c.chain_secret, kiosks.c.keyed_from, entries.c.seq, entries.c.hash)
                .outerjoin(entries, (entries.c.kiosk_id == kiosks.c.kiosk_id)
                           & (entries.c.seq == newest))
                .where(kiosks.c.kiosk_id == kiosk_id).with_for_update(of=kiosks)
            ).first()  # fmt: skip
            secret = bytes.fromhex(kiosk.chain_secret) if kiosk and kiosk.chain_secret else None
            keyed_from = kiosk.keyed_from if kiosk else None
            seq, prev = (kiosk.seq, kiosk.hash) if kiosk and kiosk.seq else (0, GENESIS)
            ordered = sorted(batch, key=lambda x: x.seq)
            old = [e for e in ordered if e.seq <= seq]
            if old:  # delivered before: each must be the very same entry
                stored = dict(
                    conn.execute(
                        select(entries.c.seq, entries.c.hash).where(
                            entries.c.kiosk_id == kiosk_id,
                            entries.c.seq.between(old[0].seq, old[-1].seq),
                        )
                    ).all()
                )
                for e in old:
                    if stored.get(e.seq) != e.hash:
                        raise ChainRefused(
                            409, e.seq, f"entry {e.seq} differs from the one stored (fork)"
                        )
            rows = []
            was_keyed = keyed_from
            for e in ordered[len(old) :]:
                if e.seq != seq + 1:
                    raise ChainRefused(409, seq + 1,
                                       f"gap: expected entry {seq + 1}, got {e.seq}")  # fmt: skip
                if e.prev_hash != prev:
                    raise ChainRefused(409, e.seq, f"entry {e.seq} does not link to entry {seq}")
                content = (e.seq, e.ts, e.kind, e.txid, e.key, e.amount, e.currency, e.data)
                keyed_from = check_hash(e, content, secret, keyed_from)
                rows.append({"kiosk_id": kiosk_id, **e.model_dump()})
                seq, prev = e.seq, e.hash
            if rows:
                conn.execute(insert(entries), rows)
                if keyed_from != was_keyed:  # its first keyed entry: no plain one after it
                    conn.execute(update(kiosks).where(kiosks.c.kiosk_id == kiosk_id)
                                 .values(keyed_from=keyed_from))  # fmt: skip
                if track_credits(conn, kiosk_id, rows, refused):
                    bump_version(conn)
                track_releases(conn, kiosk_id, rows)
            return seq, prev

    @app.post("/v1/credits/claim")
    def claim(
        body: ClaimIn, request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> Any:
        """Grant the calling kiosk the key's open credits that are free, under a lease: those
        it holds already, those no lease holds (or whose lease ended), never one pinned to
        another kiosk. One UPDATE decides it, so two kiosks claiming at the same moment never
        both get a credit (on SQLite, where writers queue, and on PostgreSQL, which looks at
        the row again after the first claim's commit). The key's own top-up log guards the
        rest."""
        kiosk_id = kiosk_of(authorization, request)
        now = int(time.time())
        claim_id = secrets.token_hex(8)
        free = (
            (credits.c.key == body.key)
            & credits.c.written_by.is_(None)
            & ((credits.c.pinned.is_(False)) | (credits.c.holder == kiosk_id))
            & (
                (credits.c.holder == kiosk_id)
                | credits.c.holder.is_(None)
                | credits.c.lease_until.is_(None)
                | (credits.c.lease_until < now)
            )
        )
        refused: list[dict[str, Any]] = []
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # the write lock first (pysqlite begins lazily)
                conn.execute(update(credits).where(false()).values(claim_id=None))
            changed = False
            if body.written is not None:  # what the key says undoes what it contradicts
                changed = reopen_contradicted(conn, kiosk_id, body.key, body.written, refused)
                if body.log is not None:
                    shown = [(r.no, r.txid) for r in body.log]
                    changed = check_closes(conn, kiosk_id, body.key, body.written, shown,
                                           refused) or changed  # fmt: skip
            moved = conn.execute(
                update(credits)
                .where(free)
                .values(holder=kiosk_id, lease_until=now + lease_seconds, claim_id=claim_id)
            )
            if body.written is not None:
                # An office credit is not on the key below the count any claim says: its bound
                # is the lowest count said (a claim may lower it, never raise it: a kiosk that
                # says a count the key never had would let a write pass as not being it).
                conn.execute(
                    update(credits)
                    .where(credits.c.key == body.key, credits.c.origin == "office",
                           credits.c.written_by.is_(None),
                           credits.c.bound.is_(None) | (credits.c.bound > body.written))
                    .values(bound=body.written)
                )  # fmt: skip
            rows = conn.execute(select(credits).where(credits.c.claim_id == claim_id)).all()
            grant(conn, [r.credit_id for r in rows], kiosk_id)
            check = [] if body.log is not None else unconfirmed(conn, kiosk_id, body.key)
            if moved.rowcount or changed:
                bump_version(conn)
        if check:  # closes made elsewhere that the key has not shown: its log, please
            return {"credits": [credit_out(r) for r in rows], "check": check}
        return {"credits": [credit_out(r) for r in rows]}

    @app.get("/v1/reference")
    def reference(
        request: Request,
        response: Response,
        authorization: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
        since: int | None = None,
    ) -> Any:
        kiosk_id = kiosk_of(authorization, request)
        with engine.connect() as conn:
            version = conn.execute(select(ref_version.c.version)).scalar()
            etag = f'"{version}-{kiosk_id}"'
            if if_none_match == etag:
                return Response(status_code=304, headers={"ETag": etag})
            # `since`: the version the kiosk holds; only the keys and debts changed after it
            # (credits and settings are few and always whole). A version head office never
            # had (a database restored from an older backup) gets everything.
            delta = since is not None and 0 <= since <= (version or 0)
            q_keys, q_debts = select(ref_keys), select(ref_debts)
            if delta:
                q_keys = q_keys.where(ref_keys.c.changed > since)
                q_debts = q_debts.where(ref_debts.c.changed > since)
            cols = ("serial", "status", "reason", "contract_account")
            keys = [{c: r._mapping[c] for c in cols} for r in conn.execute(q_keys)]
            debts = [{c: r._mapping[c] for c in ("contract_account", "amount", "currency")}
                     for r in conn.execute(q_debts)]  # fmt: skip
            held = conn.execute(
                select(credits).where(credits.c.holder == kiosk_id, credits.c.written_by.is_(None))
            ).all()
            values: dict[str, int] = {}
            said = conn.execute(select(settings).where(settings.c.scope.in_(("*", kiosk_id))))
            for r in sorted(said, key=lambda r: r.scope != "*"):  # the kiosk's own wins
                values[r.name] = r.value
        response.headers["ETag"] = etag
        return {
            "version": version,
            "since": since if delta else None,  # None: the whole list
            "keys": keys,
            "debts": debts,
            "credits": [credit_out(r) for r in held],
            "settings": values,
        }


    @app.get("/v1/release", responses={204: {"description": "no release for this kiosk"}})
    def release(request: Request, authorization: Annotated[str | None, Header()] = None) -> Any:
        """The release this kiosk is to run (the rollout in force), or 204: its version, file
        name, size, SHA-256, the signature file's text and where to download it."""
        kiosk_id = kiosk_of(authorization, request)
        with engine.connect() as conn:
            row = target(conn, kiosk_id)
        if row is None:
            return Response(status_code=204)
        return {"version": row["version"], "file": row["file"], "size": row["size"],
                "sha256": row["sha256"], "signature": row["signature"],
                "url": f"/v1/releases/{row['version']}/file"}  # fmt: skip

    @app.get("/v1/releases/{version}/file",
             responses={206: {"description": "the part asked for (Range)"},
                        416: {"description": "a range beyond the file"}})  # fmt: skip
    def release_file(
        version: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        range: Annotated[str | None, Header()] = None,  # noqa: A002 (the header's name)
    ) -> Any:
        """A release file head office stores, whole or from a byte range (`Range: bytes=N-`
        or `bytes=N-M`): an interrupted download resumes where it stopped."""
        kiosk_of(authorization, request)
        with engine.connect() as conn:
            row = conn.execute(select(releases).where(releases.c.version == version)).first()
        if row is None or release_folder is None:
            raise HTTPException(404, f"no release {version}")
        path = release_folder / row.file
        try:
            size = path.stat().st_size
        except OSError:
            raise HTTPException(404, f"release {version}: its file is missing") from None
        start, end, status = 0, size - 1, 200
        if range is not None:
            m = re.fullmatch(r"bytes=([0-9]+)-([0-9]*)", range.strip())
            if m is None:
                raise HTTPException(416, "only one range, bytes=N- or bytes=N-M",
                                    headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if start >= size or end < start:
                raise HTTPException(416, f"range beyond the file's {size} bytes",
                                    headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
            status = 206
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return StreamingResponse(_read(path, start, end - start + 1), status_code=status,
                                 media_type="application/vnd.debian.binary-package",
                                 headers=headers)  # fmt: skip


def _read(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk


def gunzip_capped(raw: bytes, cap: int) -> bytes:
    """Unpack a gzip body, but never more than `cap` bytes (413 beyond: a zip bomb)."""
    unpack = zlib.decompressobj(wbits=31)
    try:
        out = unpack.decompress(raw, cap + 1)
        if len(out) > cap or unpack.unconsumed_tail:
            raise HTTPException(413, f"body unpacks to more than {cap} bytes")
        if not unpack.eof:
            raise HTTPException(400, "body is not valid gzip: it ends early")
    except zlib.error as err:
        raise HTTPException(400, f"body is not valid gzip: {err}") from None
    return out

