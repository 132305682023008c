"""Alarms reach a person (#37): `sync.admin notify` against a real SMTP server process (aiosmtpd,
STARTTLS required, our own certificate authority) and a real webhook receiver process."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from sync.admin import notify
from sync.store.tables import alarm, kiosks, notices, open_db
from tests.conftest import ROOT, free_port

#: a webhook receiver: every POST's JSON body appended to a file, 503 while a flag file exists
RECEIVER = r"""
import http.server, json, sys
from pathlib import Path
out, flag = Path(sys.argv[2]), Path(sys.argv[3])
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if flag.exists():
            self.send_response(503); self.end_headers(); return
        with out.open("a") as f:
            f.write(json.dumps({"auth": self.headers.get("Authorization"),
                                "body": json.loads(body)}) + "\n")
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def until(what: Callable[[], Any], text: str, seconds: float = 20.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {seconds} s: {text}"
        threading.Event().wait(0.05)


def listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cert, key = tmp_path / "mail.pem", tmp_path / "mail.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    maildir = tmp_path / "maildir"
    smtp_port, hook_port = free_port(), free_port()
    smtp = subprocess.Popen([sys.executable, "-m", "aiosmtpd", "-n", "-l",
                             f"127.0.0.1:{smtp_port}", "--tlscert", str(cert), "--tlskey",
                             str(key), "-c", "aiosmtpd.handlers.Mailbox", str(maildir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    received, flag = tmp_path / "hook.jsonl", tmp_path / "hook.fail"
    hook = subprocess.Popen([sys.executable, "-c", RECEIVER, str(hook_port), str(received),
                             str(flag)])  # fmt: skip
    try:
        until(lambda: listening(smtp_port) and listening(hook_port), "SMTP and webhook up")
        (tmp_path / "hook-token").write_text("hook-secret-1\n")
        config = tmp_path / "notices.toml"
        config.write_text(f"""
[smtp]
host = "localhost"
port = {smtp_port}
security = "starttls"
sender = "Head office <ho@utility.example>"
ca_file = "{cert}"

[webhook.ops]
url = "http://127.0.0.1:{hook_port}/alarms"
token_file = "{tmp_path / 'hook-token'}"

[[rule]]
kinds = ["chain", "credit"]
email = ["it-ops@utility.example"]
webhooks = ["ops"]

[[rule]]
kinds = ["silent"]
email = ["service@utility.example"]
resend = "4h"
""")
        db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
        yield {"db": db, "config": config, "maildir": maildir, "received": received,
               "flag": flag, "tmp": tmp_path}  # fmt: skip
    finally:
        for p in (smtp, hook):
            p.terminate()
            p.wait(10)


def mails(maildir: Path) -> list[Any]:
    if not maildir.exists():
        return []
    return sorted(mailbox.Maildir(str(maildir)), key=lambda m: m["Subject"])


def hooks(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def raise_alarm(db: str, kind: str, text: str) -> None:
    engine = open_db(db)
    with engine.begin() as conn:
        alarm(conn, "K-01", 7, text, [], kind)
    engine.dispose()


def test_alarms_reach_people_by_mail_and_webhook_once_and_again_by_the_resend_rule(
    world: dict[str, Any],
) -> None:
    db, maildir = world["db"], world["maildir"]
    config = notify.load(world["config"])
    engine = open_db(db)
    raise_alarm(db, "credit", "history before the notifier: not mailed")
    t0 = datetime.now(UTC)
    n = notify.Notifier(engine, config, "HO Jena")
    n.round(t0)  # the first round starts after the newest alarm
    assert mails(maildir) == [] and hooks(world["received"]) == []

    raise_alarm(db, "chain", "upload refused: entry 8 does not link to entry 7")
    raise_alarm(db, "clock", "entry refused: time is more than 24 h ahead")  # no rule takes it
    n.round(t0 + timedelta(seconds=1))
    got = mails(maildir)
    assert len(got) == 1 and got[0]["To"] == "it-ops@utility.example"
    assert "ALARM chain K-01" in got[0]["Subject"] and "HO Jena" in got[0]["Subject"]
    assert "does not link to entry 7" in got[0].get_payload()
    [sent] = hooks(world["received"])
    assert sent["auth"] == "Bearer hook-secret-1"
    assert sent["body"]["kind"] == "chain" and sent["body"]["state"] == "raised"
    n.round(t0 + timedelta(seconds=2))  # nothing new: nothing told again
    assert len(mails(maildir)) == 1 and len(hooks(world["received"])) == 1

    # a condition: a kiosk silent; told at once, again after 4 h, and once cleared
    with engine.begin() as conn:
        conn.execute(kiosks.insert().values(kiosk_id="K-01", token_sha256="x" * 64,
                                            last_contact=(t0 - timedelta(hours=1)).isoformat()))
    n.round(t0 + timedelta(seconds=3))
    silent = [m for m in mails(maildir) if "silent" in m["Subject"]]
    assert len(silent) == 1 and silent[0]["To"] == "service@utility.example"
    n.round(t0 + timedelta(hours=1))
    assert len([m for m in mails(maildir) if "silent" in m["Subject"]]) == 1
    n.round(t0 + timedelta(hours=4, seconds=4))
    assert sorted(m["Subject"].split("]")[1].split()[0:2] for m in mails(maildir)
                  if "silent" in m["Subject"]) == [["ALARM", "silent"], ["STILL", "OPEN"]]
    with engine.begin() as conn:
        conn.execute(update(kiosks).values(last_contact=datetime.now(UTC).isoformat()))
    n.round(datetime.now(UTC))
    assert any("cleared silent" in m["Subject"] for m in mails(maildir))
    engine.dispose()


def test_a_webhook_that_fails_is_told_again_next_round_and_nothing_is_lost(
    world: dict[str, Any],
) -> None:
    db = world["db"]
    engine = open_db(db)
    n = notify.Notifier(engine, notify.load(world["config"]))
    n.round()
    world["flag"].write_text("down")
    raise_alarm(db, "credit", "credit X reported written by K-02 as write 4")
    n.round()
    assert hooks(world["received"]) == []
    with engine.connect() as conn:
        failed = conn.execute(select(notices.c.failed).where(
            notices.c.channel == "webhook:ops")).scalar()  # fmt: skip
    assert "503" in failed
    assert len(mails(world["maildir"])) == 1  # the mail went; only the hook waits
    world["flag"].unlink()
    n.round()
    [sent] = hooks(world["received"])
    assert sent["body"]["text"] == "credit X reported written by K-02 as write 4"
    assert len(mails(world["maildir"])) == 1  # the mail is not sent twice
    engine.dispose()


def test_the_notify_command_runs_as_a_process_and_a_bad_config_is_named(
    world: dict[str, Any],
) -> None:
    db, tmp = world["db"], world["tmp"]
    open_db(db).dispose()
    proc = subprocess.Popen([sys.executable, "-m", "sync.admin", "--db", db, "notify",
                             "--config", str(world["config"]), "--every", "0.2"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        until(lambda: _watermarked(db), "the notifier's first round")
        raise_alarm(db, "credit", "pending credit K-01-1 refused: it is not backed")
        until(lambda: mails(world["maildir"]), "the alarm by mail")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "told to email:it-ops@utility.example" in out
    bad = tmp / "bad.toml"
    bad.write_text('[smtp]\nhost = "mail.example"\nsecurity = "none"\nsender = "a@b"\n'
                   '[[rule]]\nkinds = ["credit"]\nemail = ["x@y"]\n')  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "sync.admin", "--db", db, "notify", "--config",
                          str(bad), "--every", "0"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "security = none only to this machine" in res.stderr
    for text, said in ((' [[rule]]\nkinds = ["colour"]\nwebhooks = ["x"]\n', "kinds ['colour']"),
                       ("", "no [[rule]]")):  # fmt: skip
        bad.write_text(text)
        res = subprocess.run([sys.executable, "-m", "sync.admin", "--db", db, "notify",
                              "--config", str(bad), "--every", "0"], capture_output=True,
                             text=True, cwd=ROOT)  # fmt: skip
        assert res.returncode == 2 and said in res.stderr, res.stderr


def _watermarked(db: str) -> bool:
    engine = open_db(db)
    try:
        with engine.connect() as conn:
            return conn.execute(select(notices).where(notices.c.alarm == "watermark")).first() \
                is not None  # fmt: skip
    finally:
        engine.dispose()


def test_head_office_stores_each_alarm_with_its_kind(tmp_path: Path) -> None:
    from sync.store.tables import alarms

    db = f"sqlite:///{tmp_path / 'ho.sqlite'}"
    raise_alarm(db, "chain", "x")
    engine = open_db(db)
    with engine.connect() as conn:
        assert conn.execute(select(alarms.c.kind)).scalar() == "chain"
    engine.dispose()
