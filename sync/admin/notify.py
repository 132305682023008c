"""Alarms reach a person: `sync.admin notify --config FILE [--every SECONDS]` tells the people
each rule names of every new stored alarm (chain, clock, credit) and every watched condition
(silent, fault, cashbox, credit_owed: sync/book/watch.py), by e-mail (SMTP with STARTTLS or
TLS) and by webhook (a JSON POST). What was told to whom is kept in the database (`notices`):
a restart tells nothing twice; a condition still open is told again after the rule's `resend`;
one that went away is told once as cleared; a delivery that failed is tried again next round.

The configuration (TOML):

    [smtp]
    host = "smtp.utility.example"
    port = 587
    security = "starttls"          # starttls | tls | none (none: to this machine only)
    user = "headoffice"            # optional, with password_file
    password_file = "/etc/prepaid-headoffice/smtp-password"
    sender = "Head office <headoffice@utility.example>"
    ca_file = "/etc/ssl/certs/utility-ca.pem"    # optional: the server's CA

    [webhook.ops]
    url = "https://hooks.utility.example/alarms"
    token_file = "/etc/prepaid-headoffice/hook-token"    # optional: Authorization: Bearer

    [[rule]]
    kinds = ["chain", "clock", "credit"]     # or ["*"]
    email = ["it-ops@utility.example"]
    webhooks = ["ops"]
    resend = "4h"                            # a condition still open: again after this
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, insert, select, update

from sync.book import watch
from sync.book.watch import Alarm
from sync.store.tables import notices

log = logging.getLogger("sync.notify")

#: the first round starts from the newest stored alarm: history is not mailed out
WATERMARK = "watermark"
SUBJECT = {"raised": "ALARM", "again": "STILL OPEN", "cleared": "cleared"}


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int
    security: str
    sender: str
    user: str | None = None
    password: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    token: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class Rule:
    kinds: tuple[str, ...]
    email: tuple[str, ...]
    webhooks: tuple[str, ...]
    resend: timedelta | None

    def takes(self, kind: str) -> bool:
        return "*" in self.kinds or kind in self.kinds


@dataclass
class Config:
    smtp: Smtp | None
    webhooks: dict[str, Webhook]
    rules: list[Rule] = field(default_factory=list)


def duration(text: str, where: str) -> timedelta | None:
    """"90s", "15m", "4h", "2d"; "0" or "never": no resend."""
    if text in ("0", "never"):
        return None
    m = re.fullmatch(r"([0-9]{1,6})([smhd])", text)
    if m is None:
        raise ConfigError(f"{where}: {text!r} is not a duration like 15m, 4h, 2d (or never)")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def _secret(path: str | None, where: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text("utf-8").strip()
    except OSError as err:
        raise ConfigError(f"{where}: {path}: {err.strerror}") from None


def load(path: Path) -> Config:
    """The configuration, every mistake named with where it is (ConfigError)."""
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: {err}") from None
    smtp = None
    if "smtp" in raw:
        s = raw["smtp"]
        security = s.get("security", "starttls")
        if security not in ("starttls", "tls", "none"):
            raise ConfigError(f"{path}: [smtp] security is starttls, tls or none, not {security!r}")
        host = str(s.get("host", ""))
        if security == "none" and host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(f"{path}: [smtp] security = none only to this machine (a relay "
                              "on localhost); use starttls or tls")  # fmt: skip
        if not host or "sender" not in s:
            raise ConfigError(f"{path}: [smtp] needs host and sender")
        smtp = Smtp(host, int(s.get("port", 587 if security == "starttls" else 465)), security,
                    str(s["sender"]), s.get("user"),
                    _secret(s.get("password_file"), f"{path}: [smtp] password_file"),
                    s.get("ca_file"))  # fmt: skip
    hooks = {}
    for name, h in raw.get("webhook", {}).items():
        url = str(h.get("url", ""))
        if not url.startswith("https://") and not re.match(r"http://(127\.0\.0\.1|localhost)[:/]",
                                                           url):  # fmt: skip
            raise ConfigError(f"{path}: [webhook.{name}] url must be https:// (http only to "
                              "this machine)")  # fmt: skip
        hooks[name] = Webhook(name, url, _secret(h.get("token_file"),
                                                 f"{path}: [webhook.{name}] token_file"),
                              h.get("ca_file"))  # fmt: skip
    rules = []
    for i, r in enumerate(raw.get("rule", []), 1):
        where = f"{path}: rule {i}"
        kinds = tuple(r.get("kinds", ()))
        unknown = [k for k in kinds if k != "*" and k not in watch.KINDS]
        if not kinds or unknown:
            raise ConfigError(f"{where}: kinds {unknown or '(none)'} not among "
                              f"{', '.join(watch.KINDS)} (or *)")  # fmt: skip
        email, names = tuple(r.get("email", ())), tuple(r.get("webhooks", ()))
        if email and smtp is None:
            raise ConfigError(f"{where}: e-mail without an [smtp] section")
        missing = [n for n in names if n not in hooks]
        if missing:
            raise ConfigError(f"{where}: no [webhook.{missing[0]}]")
        if not email and not names:
            raise ConfigError(f"{where}: tells no one (email or webhooks)")
        rules.append(Rule(kinds, email, names, duration(str(r.get("resend", "never")), where)))
    if not rules:
        raise ConfigError(f"{path}: no [[rule]]: no alarm would reach anyone")
    return Config(smtp, hooks, rules)


def _tls(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)  # verified, always


def send_mail(smtp: Smtp, to: tuple[str, ...], subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = smtp.sender, ", ".join(to), subject
    msg.set_content(body)
    if smtp.security == "tls":
        server: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=20,
                                                context=_tls(smtp.ca_file))  # fmt: skip
    else:
        server = smtplib.SMTP(smtp.host, smtp.port, timeout=20)
    with server:
        if smtp.security == "starttls":
            server.starttls(context=_tls(smtp.ca_file))
        if smtp.user and smtp.password is not None:
            server.login(smtp.user, smtp.password)
        server.send_message(msg)


def send_hook(hook: Webhook, body: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {hook.token}"} if hook.token else {}
    got = requests.post(hook.url, json=body, headers=headers, timeout=(5, 15),
                        verify=hook.ca_file or True)  # fmt: skip
    got.raise_for_status()


class Notifier:
    """One round at a time: what is new, open again past its resend, or cleared, is told."""

    def __init__(self, engine: Engine, config: Config, name: str = "head office") -> None:
        self.engine, self.config, self.name = engine, config, name

    # -------------------------------------------------------------- state

    def _notices(self) -> dict[tuple[str, str], Any]:
        with self.engine.connect() as conn:
            return {(r.alarm, r.channel): r for r in conn.execute(select(notices))}

    def _save(self, alarm: str, channel: str, known: Any, **values: Any) -> None:
        with self.engine.begin() as conn:
            if known is None:
                conn.execute(insert(notices).values(alarm=alarm, channel=channel, **values))
            else:
                conn.execute(update(notices).where(notices.c.alarm == alarm,
                                                   notices.c.channel == channel)
                             .values(**values))  # fmt: skip

    def _watermark(self, state: dict[tuple[str, str], Any]) -> int:
        row = state.get((WATERMARK, ""))
        if row is None:  # the first round: from the newest alarm on
            newest = watch.last_stored(self.engine)
            self._save(WATERMARK, "", None, first_seen=str(newest), sent=0)
            log.info("alarm notices start after stored alarm %d (older ones are in the console)",
                     newest)  # fmt: skip
            return newest
        return int(row.first_seen)

    # -------------------------------------------------------------- delivery

    def channels(self, kind: str) -> list[tuple[str, Rule, str | None]]:
        """(channel, rule, webhook name) of every rule that takes `kind`."""
        out = []
        for rule in self.config.rules:
            if not rule.takes(kind):
                continue
            if rule.email:
                out.append(("email:" + ",".join(sorted(rule.email)), rule, None))
            for name in rule.webhooks:
                out.append((f"webhook:{name}", rule, name))
        return out

    def deliver(self, channel: str, rule: Rule, hook: str | None, alarm: Alarm, state: str) -> None:
        head = f"[{self.name}] {SUBJECT[state]} {alarm.kind} {alarm.kiosk}"
        if hook is None:
            assert self.config.smtp is not None
            body = (f"{SUBJECT[state]}: {alarm.kind} at kiosk {alarm.kiosk}\n\n{alarm.text}\n\n"
                    f"since {alarm.since} (UTC)\nthe runbook says what to do: "
                    f"README, 'Alarms'\n")  # fmt: skip
            send_mail(self.config.smtp, rule.email, f"{head}: {alarm.text}"[:200], body)
        else:
            send_hook(self.config.webhooks[hook], {
                "state": state, "kind": alarm.kind, "kiosk": alarm.kiosk, "text": alarm.text,
                "since": alarm.since, "alarm": alarm.key, "head_office": self.name})  # fmt: skip

    def _tell(self, alarm: Alarm, state: dict[tuple[str, str], Any], now: datetime,
              cleared: bool = False) -> None:  # fmt: skip
        for channel, rule, hook in self.channels(alarm.kind):
            known = state.get((alarm.key, channel))
            if cleared:
                if known is None or known.cleared or not known.last_sent:
                    continue
                what = "cleared"
            elif known is None or not known.last_sent or known.cleared:
                what = "raised"
            else:
                last = datetime.fromisoformat(known.last_sent)
                if rule.resend is None or now - last < rule.resend:
                    continue
                what = "again"
            try:
                self.deliver(channel, rule, hook, alarm, what)
            except (OSError, smtplib.SMTPException, requests.RequestException) as err:
                log.warning("alarm %s to %s not delivered: %s", alarm.key, channel, err)
                values: dict[str, Any] = {"failed": str(err)[:500]}
                if known is None:
                    values |= {"first_seen": now.isoformat(), "sent": 0}
                self._save(alarm.key, channel, known, **values)
                continue
            log.info("alarm %s (%s) told to %s", alarm.key, what, channel)
            values = {"last_sent": now.isoformat(), "failed": None,
                      "sent": (known.sent if known is not None else 0) + 1,
                      "cleared": now.isoformat() if cleared else None}  # fmt: skip
            if known is None:
                values["first_seen"] = now.isoformat()
            self._save(alarm.key, channel, known, **values)

    def round(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        state = self._notices()
        after = self._watermark(state)
        newest = after
        for alarm_id, alarm in watch.stored(self.engine, after):
            self._tell(alarm, state, now)  # events: told once (a failed one again next round)
            if all((state_row := self._notices().get((alarm.key, ch))) is not None
                   and state_row.last_sent for ch, _r, _h in self.channels(alarm.kind)):
                newest = alarm_id  # every channel has it: the watermark moves past it
            else:
                break  # kept for the next round, in order
        if newest != after:
            self._save(WATERMARK, "", state.get((WATERMARK, "")), first_seen=str(newest))
        holding = watch.conditions(self.engine, now)
        for alarm in holding:
            self._tell(alarm, state, now)
        open_keys = {a.key for a in holding}
        gone = {key: row for (key, _channel), row in state.items()
                if key != WATERMARK and not key.startswith("alarm:") and key not in open_keys
                and not row.cleared}  # fmt: skip
        for key, row in sorted(gone.items()):
            kind, kiosk = (key.split(":") + ["", ""])[:2]
            over = Alarm(kind, kiosk, key, "the condition no longer holds", row.first_seen)
            self._tell(over, state, now, cleared=True)

    def run(self, every: float, stop: threading.Event) -> None:
        """Rounds until `stop`; a round that fails is logged and the next one comes."""
        while not stop.is_set():
            try:
                self.round()
            except Exception:  # noqa: BLE001 (the loop outlives one bad round, and says why)
                log.exception("alarm round failed")
            stop.wait(every)
