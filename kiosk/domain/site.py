"""Site configuration: one TOML file per site, validated at start with errors naming the field.

The TOML schema is described by pydantic models (strict: unknown keys are errors, so a typo
does not silently fall back to a default). After validation it is turned into `Site`, the frozen
domain object the engine reads, with every amount as `Money`.
"""

from __future__ import annotations

import base64
import re
import tomllib
from dataclasses import dataclass, replace
from datetime import date, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from kiosk.domain.errors import ConfigError
from kiosk.domain.hours import WEEKDAYS, OpeningHours
from kiosk.domain.money import CURRENCY_EXPONENT, Money
from sync.wire.protocol import SETTINGS, chain_secret

#: Legal-tender denominations per currency, in minor units.
DENOMINATIONS: dict[str, dict[str, frozenset[int]]] = {
    "EUR": {
        "coins": frozenset({1, 2, 5, 10, 20, 50, 100, 200}),
        "notes": frozenset({500, 1000, 2000, 5000, 10000, 20000, 50000}),
    },
    "CHF": {
        "coins": frozenset({5, 10, 20, 50, 100, 200, 500}),
        "notes": frozenset({1000, 2000, 5000, 10000, 20000, 100000}),
    },
}

#: The embedded default site, used when no site file is given.
DEFAULT_SITE = Path(__file__).resolve().parents[2] / "config" / "demo.toml"

_AMOUNT_RE = re.compile(r"\d{1,9}(\.\d{1,2})?")
_PERIOD_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f'write amounts as text with two decimals, e.g. "5.00" (got {value!r})')
    if not _AMOUNT_RE.fullmatch(value.strip()):
        raise ValueError(f'not an amount: {value!r} (write it like "5.00", not negative)')
    return Decimal(value.strip())


def _percent(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(
            f'write a percentage as a whole number or text, e.g. 25 or "12.5" (got {value!r})'
        )
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"not a percentage: {value!r}") from None
    if not d.is_finite() or not Decimal(0) <= d <= Decimal(100):
        raise ValueError(f"a percentage must be between 0 and 100, got {value!r}")
    if d != d.quantize(Decimal("0.01")):
        raise ValueError(f"at most two decimals in a percentage, got {value!r}")
    return d


def _period(value: Any) -> tuple[time, time]:
    m = _PERIOD_RE.match(value) if isinstance(value, str) else None
    if not m:
        raise ValueError(f'write an opening period as "HH:MM-HH:MM", got {value!r}')
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h2 == 24 and m2 == 0:
        h2, m2 = 23, 59
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError:
        raise ValueError(f"not a time of day in {value!r}") from None
    if not start < end:
        raise ValueError(f"opening period {value!r} ends before it starts")
    return start, end


def _currency(value: Any) -> str:
    if value not in CURRENCY_EXPONENT:
        raise ValueError(
            f"unknown currency {value!r} (known: {', '.join(sorted(CURRENCY_EXPONENT))})"
        )
    return str(value)


Amount = Annotated[Decimal, BeforeValidator(_amount)]
Currency = Annotated[str, BeforeValidator(_currency)]
Percent = Annotated[Decimal, BeforeValidator(_percent)]
Period = Annotated[tuple[time, time], BeforeValidator(_period)]
Language = Literal["de", "en", "fr", "nl"]
LANGUAGES: tuple[Language, ...] = ("de", "en", "fr", "nl")
Seconds = Annotated[int, Field(strict=True, gt=0, le=3600)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SiteSection(_Section):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    kiosk_id: str = Field(pattern=r"^[A-Z0-9][A-Z0-9-]{1,30}$")
    name: str = Field(min_length=1)
    address: str = Field(min_length=1)
    timezone: str = "Europe/Berlin"
    languages: list[Language] = Field(default=list(LANGUAGES), min_length=1)
    default_language: Language = "de"


class UtilitySection(_Section):
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    office: str = Field(min_length=1, description="where customers go to activate or unblock a key")


class MoneySection(_Section):
    currency: Currency
    coins: list[Amount] = []
    notes: list[Amount] = []
    min_topup: Amount
    max_topup: Amount
    presets: list[Amount] = []
    amount_step: Amount | None = None
    key_credit_limit: Amount


class PaymentSection(_Section):
    cash: bool = True
    card: bool = False


class HoursSection(_Section):
    always_open: bool = False
    monday: list[Period] = []
    tuesday: list[Period] = []
    wednesday: list[Period] = []
    thursday: list[Period] = []
    friday: list[Period] = []
    saturday: list[Period] = []
    sunday: list[Period] = []
    closed_on: list[date] = []


class FeeSection(_Section):
    net: Amount = Decimal("0.00")
    vat_percent: Percent = Decimal(0)
    gross: Amount = Decimal("0.00")


class DebtRecoverySection(_Section):
    share_percent: Percent = Decimal(0)
    cap: Amount | None = None


class TimeoutsSection(_Section):
    choose: Seconds = 60
    payment: Seconds = 120
    warning: Seconds = 30
    key_missing: Seconds = 90
    message: Seconds = 20


class HealthSection(_Section):
    """What keeps the automat from taking money when it could not keep it safe: free space on
    the journal's disk below the floor, or the clock jumping (backwards at all, forwards by
    more than the span) put it out of service until that clears."""

    disk_floor_mb: int = Field(default=100, ge=1, le=1_000_000)
    clock_forward_minutes: int = Field(default=120, ge=1, le=100_000)
    #: how long the automat stays out of service after a clock jump
    clock_settle_seconds: int = Field(default=60, ge=1, le=86_400)


class JournalSection(_Section):
    """Housekeeping of the journal (kiosk/ledger/archive.py): entries head office has
    acknowledged move into compressed archive segments beside the journal once they are
    `archive_after_days` old; a segment stays on the kiosk `keep_archive_days` after its
    newest entry."""

    archive_after_days: int = Field(default=90, ge=1, le=3650)
    keep_archive_days: int = Field(default=730, ge=1, le=36_500)
    segment_entries: int = Field(default=50_000, ge=100, le=1_000_000)


LogLevel = Literal["debug", "info", "warning", "error"]


class LogsSection(_Section):
    """Where the automat's log goes and how much of it: to journald under systemd (structured
    fields), else to a rotated file (`file`, or logs/kiosk.log in the data directory); a level
    for all, and one per logger where a technician needs more (`levels = {"drivers.cctalk" =
    "debug"}`)."""

    level: LogLevel = "info"
    levels: dict[str, LogLevel] = {}
    target: Literal["auto", "journald", "file"] = Field(
        default="auto", description='"auto": journald when systemd started the automat'
    )
    file: str | None = None
    file_max_mb: int = Field(default=10, ge=1, le=10_000)
    file_backups: int = Field(default=5, ge=1, le=100)


#: The port of a device that is simulated: its simulator is started on a real port (a pty, a
#: TCP socket) and the automat is pointed at that (kiosk.sim.rig); nothing else reads this value.
SIM = "sim"


def is_simulated(port: str) -> bool:
    return port == SIM


class SerialDevice(_Section):
    port: str = Field(min_length=1, description='"sim", a serial device path or a pyserial URL')
    address: int | None = Field(default=None, ge=1, le=255)
    crc16: bool = False
    #: ccTalk (coins and notes), or eSSP (ITL note validators: NV9, NV10, NV200)
    protocol: Literal["cctalk", "essp"] = "cctalk"
    #: eSSP: negotiate a key and encrypt every command (a validator that asks for it gets it)
    encryption: bool = False


class CardDevice(_Section):
    port: str = Field(min_length=1, description='"sim", a serial device path or tcp://host:port')
    protocol: Literal["zvt"] = "zvt"


class ReaderDevice(_Section):
    reader: str = Field(default=SIM, min_length=1, description='"sim" or a reader-name pattern')


class PrinterDevice(_Section):
    port: str = Field(default=SIM, min_length=1)
    receipt: Literal["always", "ask"] = Field(
        default="always", description='"ask": the customer chooses on the payment screens'
    )


class DevicesSection(_Section):
    coin: SerialDevice | None = None
    notes: SerialDevice | None = None
    card: CardDevice | None = None
    reader: ReaderDevice = ReaderDevice()
    printer: PrinterDevice | None = None


class HeadOfficeSection(_Section):
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    sync_interval: Seconds = 60
    #: how long a new release has to come up and finish a sync round before the launcher rolls
    #: it back to the one before (seconds)
    trial_seconds: Seconds = 300
    #: the CA certificate(s) head office's TLS certificate is checked against, when it is not
    #: signed by a public CA (a PEM file); leave out for the system's CAs
    ca_file: str | None = None


#: where plain HTTP to head office is allowed: this machine only (a TLS proxy beside it)
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class SecretsSection(_Section):
    file: str | None = Field(default=None, description="path of the secrets file, outside the repo")
    token_env: str = Field(default="KIOSK_HEAD_OFFICE_TOKEN", pattern=r"^[A-Z_][A-Z0-9_]*$")


class UiSection(_Section):
    """The screen: its size in pixels, rotation, and how large the shortest touch target is."""

    width: int = Field(default=1280, ge=640, le=7680)
    height: int = Field(default=800, ge=480, le=4320)
    rotation: Literal[0, 90, 180, 270] = 0
    fullscreen: bool = True
    diagonal_inch: float = Field(default=15.6, gt=5, lt=100, description="for sizes in mm")
    speech: Literal["off", "on_request", "always"] = Field(
        default="on_request",
        description="spoken prompts: off; on_request (the speaker button or its corner); always",
    )


class SiteFile(_Section):
    """The whole TOML file."""

    site: SiteSection
    utility: UtilitySection
    money: MoneySection
    payment: PaymentSection = PaymentSection()
    hours: HoursSection
    fee: FeeSection = FeeSection()
    debt_recovery: DebtRecoverySection = DebtRecoverySection()
    timeouts: TimeoutsSection = TimeoutsSection()
    devices: DevicesSection = DevicesSection()
    head_office: HeadOfficeSection = HeadOfficeSection()
    secrets: SecretsSection = SecretsSection()
    ui: UiSection = UiSection()
    health: HealthSection = HealthSection()
    journal: JournalSection = JournalSection()
    logs: LogsSection = LogsSection()


@dataclass(frozen=True)
class FeeRule:
    """A per-top-up fee: net, VAT rate in basis points, and the gross the customer pays."""

    net: Money
    vat_bp: int
    gross: Money


@dataclass(frozen=True)
class RecoveryRule:
    """Debt recovery: a share of each top-up (basis points), optionally capped per top-up."""

    share_bp: int
    cap: Money | None


@dataclass(frozen=True)
class Timeouts:
    choose: int
    payment: int
    warning: int
    key_missing: int
    message: int


@dataclass(frozen=True)
class Site:
    """The validated site configuration, as the engine and services read it."""

    source: str
    id: str
    kiosk_id: str
    name: str
    address: str
    languages: tuple[str, ...]
    default_language: str
    utility_id: str
    utility_name: str
    utility_office: str
    currency: str
    coins: tuple[Money, ...]
    notes: tuple[Money, ...]
    min_topup: Money
    max_topup: Money
    presets: tuple[Money, ...]
    amount_step: Money
    key_credit_limit: Money
    cash_enabled: bool
    card_enabled: bool
    hours: OpeningHours
    fee: FeeRule
    recovery: RecoveryRule
    timeouts: Timeouts
    devices: DevicesSection
    head_office: HeadOfficeSection
    secrets: SecretsSection
    ui: UiSection
    #: receipts: "always", "ask" (the customer may decline) or "none" (no printer)
    receipt: str = "none"
    health: HealthSection = HealthSection()
    journal: JournalSection = JournalSection()
    logs: LogsSection = LogsSection()

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        # Drop pydantic's internal union/validator tags from the location.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (misspelt, or not allowed here)"
        elif e["type"] == "missing":
            msg = "required field is missing"
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


def _cross_checks(f: SiteFile) -> list[str]:
    """Checks that span fields; each problem names the field it is about."""
    p: list[str] = []
    m = f.money
    cur = m.currency
    exp = CURRENCY_EXPONENT[cur]
    units = DENOMINATIONS[cur]

    def minor(d: Decimal) -> int:
        return int(d.scaleb(exp))

    for kind in ("coins", "notes"):
        values = getattr(m, kind)
        legal = units[kind]
        for i, d in enumerate(values):
            if minor(d) not in legal:
                known = ", ".join(Money(v, cur).amount_text() for v in sorted(legal))
                p.append(f"money.{kind}[{i}]: {d} is not a {cur} {kind[:-1]} (known: {known})")
        if len(set(values)) != len(values):
            p.append(f"money.{kind}: a denomination is listed twice")
    if f.payment.cash and not (m.coins or m.notes):
        p.append("money.coins: cash payment needs at least one coin or note denomination")
    if not (f.payment.cash or f.payment.card):
        p.append("payment: at least one of cash or card must be enabled")
    if f.devices.coin is not None and f.devices.coin.protocol != "cctalk":
        p.append("devices.coin.protocol: coin acceptors speak ccTalk (eSSP is for notes)")
    n = f.devices.notes
    if n is not None and n.protocol == "essp" and (n.address is not None or n.crc16):
        p.append("devices.notes: address and crc16 are ccTalk settings; an eSSP validator "
                 "is at address 0 with its own CRC")  # fmt: skip
    if n is not None and n.protocol == "cctalk" and n.encryption:
        p.append("devices.notes.encryption: only an eSSP validator encrypts")
    if f.payment.cash and not (f.devices.coin or f.devices.notes):
        p.append("devices.coin: cash payment needs a coin acceptor or note validator configured")
    if f.payment.card and not f.devices.card:
        p.append("devices.card: card payment is enabled but no card terminal is configured")
    if not f.payment.card and f.devices.card:
        p.append("devices.card: a card terminal is configured but payment.card is false")

    lo, hi = minor(m.min_topup), minor(m.max_topup)
    step = minor(m.amount_step) if m.amount_step is not None else _default_step(f)
    if lo <= 0:
        p.append("money.min_topup: must be more than zero")
    if lo > hi:
        p.append(f"money.min_topup: {m.min_topup} is above money.max_topup ({m.max_topup})")
    if hi > minor(m.key_credit_limit):
        p.append(
            f"money.max_topup: {m.max_topup} is above money.key_credit_limit ({m.key_credit_limit})"
        )
    if step <= 0:
        p.append("money.amount_step: must be more than zero")
    for i, d in enumerate(m.presets):
        if not lo <= minor(d) <= hi:
            p.append(f"money.presets[{i}]: {d} is outside {m.min_topup}..{m.max_topup}")
        elif step > 0 and minor(d) % step:
            p.append(f"money.presets[{i}]: {d} is not a multiple of the amount step")

    fee = f.fee
    expected = (fee.net * (1 + fee.vat_percent / 100)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    if expected != fee.gross:
        p.append(
            f"fee.gross: {fee.gross} does not match net {fee.net} "
            f"plus {fee.vat_percent} % VAT ({expected})"
        )
    if minor(fee.gross) >= lo > 0:
        p.append(f"fee.gross: {fee.gross} must be below money.min_topup ({m.min_topup})")

    s = f.site
    try:
        ZoneInfo(s.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        p.append(f"site.timezone: unknown time zone {s.timezone!r}")
    if s.default_language not in s.languages:
        p.append(f"site.default_language: {s.default_language!r} is not in site.languages")
    if len(set(s.languages)) != len(s.languages):
        p.append("site.languages: a language is listed twice")

    d = f.devices
    real = [name for name, port in (
        ("coin", d.coin.port if d.coin else SIM), ("notes", d.notes.port if d.notes else SIM),
        ("card", d.card.port if d.card else SIM), ("printer", d.printer.port if d.printer else SIM),
        ("reader", d.reader.reader)) if not is_simulated(port)]  # fmt: skip
    if real and f.secrets.file is None:
        p.append(
            f"secrets.file: the site names real devices ({', '.join(real)}) but no secrets "
            "file: it would run on the demo master keys and PIN 0000. Write one with the "
            "utility's keys and the technician PIN (kiosk diag pin-hash) and name it here"
        )

    if f.head_office.url:
        p += _head_office_url(f.head_office.url)

    h = f.hours
    if not h.always_open and not any(getattr(h, d) for d in WEEKDAYS):
        p.append("hours: no opening period on any day (set always_open = true or add periods)")
    for d in WEEKDAYS:
        periods = sorted(getattr(h, d))
        for (_a, b), (c, _d) in zip(periods, periods[1:], strict=False):
            if c < b:
                p.append(f"hours.{d}: opening periods overlap")
    return p


def _head_office_url(url: str) -> list[str]:
    """What is wrong with head office's URL, parsed as the HTTP client parses it: a user or
    password before "@" (userinfo: `http://127.0.0.1:8765@attacker.example/` goes to
    attacker.example), no host, a port that is none, or plain HTTP beyond this machine."""
    parts = urlsplit(url)
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as err:  # a port that is not a number, or out of range
        return [f"head_office.url: {url}: {err}"]
    if "@" in parts.netloc or parts.username is not None:
        return [f"head_office.url: a user or password before '@' is not allowed (this URL "
                f"would go to {host!r}); give only the scheme, host, port and path"]  # fmt: skip
    if not host:
        return [f"head_office.url: {url} names no host"]
    if parts.scheme == "http" and host not in LOOPBACK:
        return [f"head_office.url: {url} is plain HTTP to another machine: the token and "
                "the journal would cross the network in clear; use https://"]  # fmt: skip
    return []


def _default_step(f: SiteFile) -> int:
    exp = CURRENCY_EXPONENT[f.money.currency]
    cash = [int(d.scaleb(exp)) for d in (*f.money.coins, *f.money.notes)]
    return min(cash) if f.payment.cash and cash else 1


def parse_site(data: dict[str, Any], source: str) -> Site:
    """Validate parsed TOML and build the `Site`; raises `ConfigError` naming every problem."""
    try:
        f = SiteFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, _pydantic_problems(err)) from None
    problems = _cross_checks(f)
    if problems:
        raise ConfigError(source, problems)

    cur = f.money.currency

    def money(d: Decimal) -> Money:
        return Money.from_decimal(d, cur)

    step = (
        money(f.money.amount_step)
        if f.money.amount_step is not None
        else Money(_default_step(f), cur)
    )
    tz = ZoneInfo(f.site.timezone)
    hours = OpeningHours(
        tz=tz,
        always_open=f.hours.always_open,
        weekly=tuple(tuple(sorted(getattr(f.hours, d))) for d in WEEKDAYS),
        closed_on=frozenset(f.hours.closed_on),
    )
    r = f.debt_recovery
    return Site(
        source=source,
        id=f.site.id,
        kiosk_id=f.site.kiosk_id,
        name=f.site.name,
        address=f.site.address,
        languages=tuple(f.site.languages),
        default_language=f.site.default_language,
        utility_id=f.utility.id,
        utility_name=f.utility.name,
        utility_office=f.utility.office,
        currency=cur,
        coins=tuple(sorted(money(d) for d in f.money.coins)),
        notes=tuple(sorted(money(d) for d in f.money.notes)),
        min_topup=money(f.money.min_topup),
        max_topup=money(f.money.max_topup),
        presets=tuple(money(d) for d in f.money.presets),
        amount_step=step,
        key_credit_limit=money(f.money.key_credit_limit),
        cash_enabled=f.payment.cash,
        card_enabled=f.payment.card,
        hours=hours,
        fee=FeeRule(money(f.fee.net), int(f.fee.vat_percent * 100), money(f.fee.gross)),
        recovery=RecoveryRule(
            int(r.share_percent * 100), money(r.cap) if r.cap is not None else None
        ),
        timeouts=Timeouts(**f.timeouts.model_dump()),
        devices=f.devices,
        head_office=f.head_office,
        ui=f.ui,
        secrets=f.secrets,
        receipt=f.devices.printer.receipt if f.devices.printer is not None else "none",
        health=f.health,
        journal=f.journal,
        logs=f.logs,
    )


#: site settings head office may change (integers: minor units, the fee's VAT in basis points)
REMOTE_SETTINGS = SETTINGS


def with_settings(site: Site, values: dict[str, int], source: str = "head office") -> Site:
    """The site with head office's settings applied on top of its file; ConfigError naming each
    problem (and nothing applied) when they are unknown, not integers or do not fit together."""
    problems = []
    for name, value in values.items():
        if name not in REMOTE_SETTINGS:
            problems.append(f"{name}: not a setting head office may change")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{name}: {value!r} is not a whole number of at least 0")
    if problems:
        raise ConfigError(source, problems)
    m = site.money
    lo = m(values.get("min_topup", site.min_topup.minor))
    hi = m(values.get("max_topup", site.max_topup.minor))
    limit = m(values.get("key_credit_limit", site.key_credit_limit.minor))
    net = m(values.get("fee_net", site.fee.net.minor))
    vat_bp = values.get("fee_vat_bp", site.fee.vat_bp)
    vat = (Decimal(net.minor) * vat_bp / 10000).quantize(Decimal(1), ROUND_HALF_UP)
    fee = FeeRule(net, vat_bp, m(net.minor + int(vat)))
    if lo.minor <= 0:
        problems.append("min_topup: must be more than zero")
    if lo > hi:
        problems.append(f"min_topup: {lo} is above max_topup ({hi})")
    if hi > limit:
        problems.append(f"max_topup: {hi} is above key_credit_limit ({limit})")
    if limit > site.key_credit_limit:  # the keys' value files were made with the file's limit
        problems.append(f"key_credit_limit: {limit} is above the keys' own limit in the site "
                        f"file ({site.key_credit_limit}): a key would refuse what was "
                        "paid")  # fmt: skip
    if lo.minor % site.amount_step.minor or hi.minor % site.amount_step.minor:
        problems.append(f"min_topup/max_topup: not multiples of the amount step {site.amount_step}")
    if fee.gross >= lo:
        problems.append(f"fee_net: the fee {fee.gross} must be below min_topup ({lo})")
    if problems:
        raise ConfigError(source, problems)
    presets = tuple(p for p in site.presets if lo <= p <= hi)
    return replace(
        site, min_topup=lo, max_topup=hi, key_credit_limit=limit, fee=fee, presets=presets
    )


def load_site(path: str | Path | None = None) -> Site:
    """Read and validate a site file; the embedded demo site when `path` is None."""
    p = Path(path) if path is not None else DEFAULT_SITE
    source = str(p)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(source, [f"cannot read the file: {err.strerror or err}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, ["the file is not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, [f"not valid TOML: {err}"]) from None
    return parse_site(data, source)


def _secret(site: Site, section: str, name: str) -> tuple[str | None, Any]:
    """(the secrets file, `[section] name` in it): (None, None) without a secrets file or where
    the file is not there (the demo of a real site on another machine), the value None without
    the line; a file that cannot be read is a ConfigError."""
    path = site.secrets.file
    if path is None:
        return None, None
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(path, [f"unreadable: {err}"]) from None
    table = data.get(section, {})
    return path, table.get(name) if isinstance(table, dict) else None


def load_chain_secret(site: Site) -> bytes | None:
    """The kiosk's chain secret, `[journal] chain_secret` (64 hex digits, from head office's
    `sync.admin kiosk add --chain-secret-file`) in the site's secrets file: the journal's entries
    are hashed with it (kiosk/ledger/journal.py). None without a secrets file or without the
    line (the demo; a kiosk not given one yet: its journal stays plain SHA-256), or where the
    file is not there (the demo of a real site on another machine; the automat itself needs
    the file for its keys, and a keyed journal neither verifies nor takes an entry without the
    secret)."""
    path, text = _secret(site, "journal", "chain_secret")
    if path is None or text is None:
        return None
    try:
        return chain_secret(str(text))
    except ValueError as err:
        raise ConfigError(path, [f"journal.chain_secret: {err}"]) from None


def load_update_key(site: Site) -> str | None:
    """The utility's release public key, `[updates] public_key` (base64 of the Ed25519 key's 32
    bytes, as `sync.admin release keygen` printed it) in the site's secrets file: the automat
    installs only releases signed with it. None without a secrets file or the line (the automat
    then installs no release)."""
    path, text = _secret(site, "updates", "public_key")
    if path is None or text is None:
        return None
    try:
        raw = base64.b64decode(str(text).strip(), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ConfigError(path, ["updates.public_key: not 32 bytes in base64 (as `sync.admin "
                                 "release keygen` printed it)"])  # fmt: skip
    return str(text).strip()

