"""Site files: the shipped ones validate; every kind of bad input names file, field and reason."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kiosk.domain.errors import ConfigError
from kiosk.domain.money import Money
from kiosk.domain.site import load_site, parse_site
from tests.conftest import CONFIG, edited_data, run_kiosk, site_data

SHIPPED = sorted(CONFIG.glob("*.toml"))


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_site(data, "bad.toml")
    assert str(err.value).startswith("bad.toml: ")
    return err.value.problems


def edited(section: str, **fields: Any) -> dict[str, Any]:
    return edited_data("demo", **{section: fields})


def test_the_seed_sites_are_shipped_and_valid() -> None:
    names = {p.stem for p in SHIPPED}
    assert names == {
        "demo",
        "jena-rudolstaedter-strasse",
        "jena-saalstrasse",
        "poessneck-breite-strasse",
        "thal-elektra",
    }
    sites = {p.stem: load_site(p) for p in SHIPPED}
    # Card payment only at Saalstraße (and the demo); cash everywhere.
    assert {n for n, s in sites.items() if s.card_enabled} == {"demo", "jena-saalstrasse"}
    assert all(s.cash_enabled for s in sites.values())
    # Pößneck all day; the Jena sites during opening hours.
    assert sites["poessneck-breite-strasse"].hours.always_open
    assert not sites["jena-saalstrasse"].hours.always_open
    thal = sites["thal-elektra"]
    assert thal.currency == "CHF" and Money(500, "CHF") in thal.coins
    assert not thal.card_enabled
    assert load_site(None).id == "demo"  # the embedded default


def test_opening_hours_in_local_time() -> None:
    saal = load_site(CONFIG / "jena-saalstrasse.toml").hours
    saturday_1230_local = datetime(2026, 11, 21, 11, 30, tzinfo=UTC)
    assert saal.is_open(saturday_1230_local)
    assert not saal.is_open(datetime(2026, 11, 21, 12, 30, tzinfo=UTC))  # 13:30 local
    assert not saal.is_open(datetime(2026, 11, 22, 11, 0, tzinfo=UTC))  # Sunday
    assert not saal.is_open(datetime(2026, 12, 25, 11, 0, tzinfo=UTC))  # closed_on
    nxt = saal.next_opening(datetime(2026, 11, 22, 11, 0, tzinfo=UTC))
    assert nxt is not None and (nxt.weekday(), nxt.hour) == (0, 9)


@pytest.mark.parametrize(
    "data,expected",
    [
        (edited("money", currency="USD"), "money.currency: unknown currency 'USD'"),
        (edited("money", coins=["0.10", "0.30"]), "money.coins[1]: 0.30 is not a EUR coin"),
        (edited("money", notes=["5.00", "15.00"]), "money.notes[1]: 15.00 is not a EUR note"),
        (edited("money", min_topup=5.0), "money.min_topup: write amounts as text"),
        (edited("money", min_topup=5), "money.min_topup: write amounts as text"),
        (edited("money", min_topup="-5.00"), "money.min_topup: not an amount"),
        (edited("money", min_topup="5.001"), "money.min_topup: not an amount"),
        (edited("money", min_topup="300.00"), "money.min_topup: 300.00 is above money.max_topup"),
        (edited("money", min_topup="0.00"), "money.min_topup: must be more than zero"),
        (edited("money", presets=["1.00"]), "money.presets[0]: 1.00 is outside 5.00..250.00"),
        (edited("money", presets=["10.05"]), "money.presets[0]: 10.05 is not a multiple"),
        (
            edited("money", max_topup="900.00"),
            "money.max_topup: 900.00 is above money.key_credit_limit",
        ),
        (edited("money", min_topup=None), "money.min_topup: required field is missing"),
        (edited("money", colour="blue"), "money.colour: unknown field"),
        (
            edited("devices", card=None),
            "devices.card: card payment is enabled but no card terminal",
        ),
        (
            edited("payment", card=False),
            "devices.card: a card terminal is configured but payment.card is false",
        ),
        (edited("payment", card="yes"), "payment.card: Input should be a valid boolean"),
        (
            edited("fee", net="21.01", vat_percent=19, gross="25.01"),
            "fee.gross: 25.01 does not match",
        ),
        (edited("fee", net="5.00", gross="5.00"), "fee.gross: 5.00 must be below money.min_topup"),
        (edited("fee", vat_percent=19.0), "fee.vat_percent: write a percentage"),
        (
            edited("debt_recovery", share_percent=120),
            "debt_recovery.share_percent: a percentage must be between 0 and 100",
        ),
        (edited("hours", always_open=False), "hours: no opening period on any day"),
        (
            edited("hours", monday=["18:00-08:00"]),
            "hours.monday[0]: opening period '18:00-08:00' ends before it starts",
        ),
        (
            edited("hours", monday=["8-18"]),
            'hours.monday[0]: write an opening period as "HH:MM-HH:MM"',
        ),
        (
            edited("hours", monday=["08:00-12:00", "11:00-13:00"]),
            "hours.monday: opening periods overlap",
        ),
        (edited("site", timezone="Mars/Olympus"), "site.timezone: unknown time zone"),
        (edited("site", languages=["de", "xx"]), "site.languages[1]: Input should be"),
        (
            edited("site", default_language="nl", languages=["de"]),
            "site.default_language: 'nl' is not in site.languages",
        ),
        (edited("site", kiosk_id="demo 01"), "site.kiosk_id: String should match pattern"),
        (edited("timeouts", payment=0), "timeouts.payment: Input should be greater than 0"),
        (edited("timeouts", payment="60"), "timeouts.payment: Input should be a valid integer"),
        (edited("head_office", url="ftp://x"), "head_office.url: String should match pattern"),
        (edited("secrets", token="abc"), "secrets.token: unknown field"),
        (
            edited("devices.coin", address=300),
            "devices.coin.address: Input should be less than or equal to 255",
        ),
    ],
)
def test_invalid_config_names_the_field_and_reason(data: dict[str, Any], expected: str) -> None:
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_every_problem_is_reported_at_once() -> None:
    data = edited("money", currency="EUR", coins=["0.30"], min_topup="500.00")
    data["site"]["timezone"] = "Nowhere/Land"
    found = problems(data)
    assert len(found) >= 3, found


def test_chf_denominations_follow_the_currency() -> None:
    data = copy.deepcopy(site_data("thal-elektra"))
    data["money"]["coins"] = ["0.01"]  # a euro cent, not a Swiss coin
    assert problems(data)[0].startswith("money.coins[0]: 0.01 is not a CHF coin")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[site\nid = 1", "not valid TOML"),
        ("", "site: required field is missing"),
        ("\udcff", None),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, text: str, expected: str | None) -> None:
    f = tmp_path / "site.toml"
    if expected is None:
        f.write_bytes(b"\xff\xfe[site]")
        expected = "not UTF-8"
    else:
        f.write_text(text, "utf-8")
    with pytest.raises(ConfigError) as err:
        load_site(f)
    assert err.value.source == str(f)
    assert any(expected in p for p in err.value.problems), err.value.problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_site(tmp_path / "nope.toml")


def test_config_check_command(tmp_path: Path) -> None:
    good = run_kiosk("config", "check", *map(str, SHIPPED))
    assert good.returncode == 0, good.stderr
    assert good.stdout.count(": ok (") == len(SHIPPED)

    bad = tmp_path / "bad.toml"
    text = (CONFIG / "demo.toml").read_text("utf-8")
    text = text.replace('currency = "EUR"', 'currency = "XYZ"').replace(
        'min_topup = "5.00"', "min_topup = 5.0"
    )
    bad.write_text(text, "utf-8")
    before = bad.read_bytes()
    res = run_kiosk("config", "check", str(bad))
    assert res.returncode == 1
    assert f"{bad}: 1 problem(s)" in res.stderr or f"{bad}: " in res.stderr
    assert "money.min_topup: write amounts as text" in res.stderr
    assert bad.read_bytes() == before  # checking changes nothing


def test_plain_http_to_head_office_only_on_this_machine() -> None:
    """#17 item 8: the token and the journal never cross a network in clear."""
    said = problems(edited("head_office", url="http://10.20.30.40:8765"))
    assert said == [
        "head_office.url: http://10.20.30.40:8765 is plain HTTP to another machine: "
        "the token and the journal would cross the network in clear; use https://"
    ]
    for fine in ("http://127.0.0.1:8765", "http://localhost/", "http://[::1]:80",
                 "https://head-office.example.net"):  # fmt: skip
        assert parse_site(edited("head_office", url=fine), "ok.toml").head_office.url == fine
    assert problems(edited("head_office", url="http://127.0.0.1.example.net/")) != []


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8765@attacker.example/",
         "head_office.url: a user or password before '@' is not allowed (this URL would go to "
         "'attacker.example')"),
        ("https://kiosk:secret@head-office.example.net/",
         "head_office.url: a user or password before '@' is not allowed"),
        ("http://localhost@10.20.30.40/", "head_office.url: a user or password before '@'"),
        ("http://127.0.0.1@/", "head_office.url: a user or password before '@'"),
        ("http://127.0.0.1:99999/", "head_office.url: http://127.0.0.1:99999/: Port out of range"),
        ("http://:8765/", "head_office.url: http://:8765/ names no host"),
        ("http://127.0.0.1.example.net:80/", "head_office.url: http://127.0.0.1.example.net:80/ "
         "is plain HTTP to another machine"),
    ],
)  # fmt: skip
def test_head_office_url_is_parsed_and_userinfo_is_refused(url: str, says: str) -> None:
    """The loopback rule decides on the host the HTTP client will connect to, not on text
    before a colon: a URL with userinfo is refused whatever its scheme; a site file with one
    gives no site (the check changes nothing)."""
    said = problems(edited("head_office", url=url))
    assert len(said) == 1 and said[0].startswith(says), said
    for fine in ("http://LOCALHOST:8765/v1", "http://[::1]/", "https://10.20.30.40:8443/"):
        assert parse_site(edited("head_office", url=fine), "ok.toml").head_office.url == fine


def test_real_devices_without_a_secrets_file_are_refused() -> None:
    """#17 item 6. Before: a site with real ports but no [secrets] ran on the demo master keys
    and PIN 0000 with only a warning."""
    data = edited_data("demo", devices={"coin": {"port": "/dev/ttyUSB0", "address": 2}})
    said = problems(data)
    assert len(said) == 1 and said[0].startswith(
        "secrets.file: the site names real devices (coin) but no secrets file: it would run on "
        "the demo master keys and PIN 0000"
    ), said
    data["secrets"] = {"file": "/etc/prepaid-kiosk/secrets.toml"}
    assert parse_site(data, "ok.toml").devices.coin is not None
    assert parse_site(site_data("demo"), "demo.toml").secrets.file is None  # all simulated


@pytest.mark.parametrize(
    ("device", "fields", "expected"),
    [
        ("coin", {"port": "sim", "protocol": "essp"}, "devices.coin.protocol: coin acceptors"),
        ("notes", {"port": "sim", "protocol": "essp", "address": 40}, "devices.notes: address"),
        ("notes", {"port": "sim", "encryption": True}, "devices.notes.encryption: only an eSSP"),
        ("notes", {"port": "sim", "protocol": "mdb"}, "devices.notes.protocol"),
    ],
)
def test_the_note_protocol_is_checked(device: str, fields: dict[str, Any], expected: str) -> None:
    data = copy.deepcopy(site_data("demo"))
    data.setdefault("devices", {})[device] = fields
    assert any(p.startswith(expected) for p in problems(data)), problems(data)


def test_an_essp_note_validator_is_a_valid_site() -> None:
    data = copy.deepcopy(site_data("demo"))
    data.setdefault("devices", {})["notes"] = {"port": "sim", "protocol": "essp",
                                               "encryption": True}  # fmt: skip
    site = parse_site(data, "essp.toml")
    assert site.devices.notes is not None and site.devices.notes.protocol == "essp"
