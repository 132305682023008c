"""`kiosk key personalise|show|meter` and `kiosk devices probe reader`."""

from __future__ import annotations

import json
import time
from pathlib import Path

from drivers.chipkey.reader import card_present
from drivers.chipkey.sim import VirtualCard
from drivers.chipkey.vpcd import VpcdCard
from tests.conftest import CONFIG, run_kiosk


def test_personalise_meter_show_a_virtual_key(tmp_path: Path) -> None:
    made = run_kiosk(
        "key",
        "personalise",
        "--serial",
        "K-9",
        "--account",
        "4711009",
        "--meter",
        "1ESY9",
        "--initial",
        "5.00",
        "--json",
        data_dir=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    info = json.loads(made.stdout)
    assert (info["serial"], info["credit"], info["role"]) == ("K-9", 500, "customer")
    assert "DEMO master keys" in made.stderr  # said out loud: no secrets file in the demo site
    assert (tmp_path / "keys" / "K-9.json").exists()

    used = run_kiosk(
        "key", "meter", "--serial", "K-9", "--consume", "7.00", "--json", data_dir=tmp_path
    )
    # 7.00 at the demo meter's 0.35/kWh is 20 kWh; 5.00 was on the key, 2.00 is emergency credit.
    assert json.loads(used.stdout) == {
        "credit": 0,
        "taken": 500,
        "emergency_debt": 200,
        "reading_wh": 20000,
    }
    shown = json.loads(
        run_kiosk("key", "show", "--serial", "K-9", "--json", data_dir=tmp_path).stdout
    )
    assert (
        shown["credit"] == 0
        and shown["meter"]["emergency_in_use"]
        and shown["meter"]["debt"] == 200
    )


def test_unknown_virtual_key_and_bad_amount_are_clear_errors(tmp_path: Path) -> None:
    missing = run_kiosk("key", "show", "--serial", "NOPE", data_dir=tmp_path)
    assert missing.returncode == 1 and "no virtual key NOPE" in missing.stderr
    bad = run_kiosk(
        "key",
        "personalise",
        "--serial",
        "K-1",
        "--account",
        "1",
        "--meter",
        "1",
        "--initial",
        "5.001",
        data_dir=tmp_path,
    )
    assert bad.returncode == 1 and "not an amount: '5.001'" in bad.stderr
    assert not (tmp_path / "keys" / "K-1.json").exists()


def test_real_master_keys_come_from_the_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(
        '[chipkey]\nmaster = "'
        + "11" * 16
        + '"\nread = "'
        + "22" * 16
        + '"\ncredit = "'
        + "33" * 16
        + '"\ndebit = "'
        + "44" * 16
        + '"\n'
    )
    site = tmp_path / "site.toml"
    site.write_text(
        (CONFIG / "demo.toml")
        .read_text()
        .replace("[devices.coin]", f'[secrets]\nfile = "{secrets}"\n\n[devices.coin]')
    )
    made = run_kiosk(
        "key",
        "personalise",
        "--site",
        str(site),
        "--serial",
        "K-5",
        "--account",
        "5",
        "--meter",
        "5",
        data_dir=tmp_path,
    )
    assert made.returncode == 0 and "DEMO" not in made.stderr
    # The demo keys do not open a key made with the site's own master keys.
    foreign = run_kiosk("key", "show", "--serial", "K-5", data_dir=tmp_path)
    assert foreign.returncode == 1 and "authentication error" in foreign.stderr


def test_probe_reader_through_pcscd(pcscd: str) -> None:
    slot = VpcdCard(VirtualCard(bytes(7)))
    slot.insert()
    try:
        deadline = time.monotonic() + 5
        while not card_present(pcscd):
            assert time.monotonic() < deadline
            slot._stop.wait(0.05)  # pcscd polls vpcd: ask again shortly
        res = run_kiosk("devices", "probe", "reader", "--json")
        readers = {r["reader"]: r["atr"] for r in json.loads(res.stdout)["readers"]}
        assert readers[pcscd] == "3b8180018080"
    finally:
        slot.remove()


def test_upgrade_gives_a_key_of_the_first_layout_its_write_counter(tmp_path: Path) -> None:
    from dataclasses import replace

    from drivers.chipkey.profile import ChipKey, Identity
    from kiosk.adapters.key import DEMO_KEYS
    from kiosk.service.keytool import virtual_path, virtual_uid

    path = virtual_path(tmp_path, "K-OLD")
    path.parent.mkdir(parents=True)
    card = VirtualCard(virtual_uid("K-OLD"), path)
    ident = Identity("DEMO", "4711", "1ESY1", "electricity", "K-OLD", "customer", "EUR")
    ChipKey(card, DEMO_KEYS).personalise(replace(ident, version=1), upper=50_000, initial=500)
    for n in range(2):
        ChipKey(card, DEMO_KEYS).credit(f"T{n}", 100, 50_000, new=True)
    done = run_kiosk("key", "upgrade", "--serial", "K-OLD", "--json", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert (info["layout"], info["written"], info["credit"], info["upgraded"]) == (2, 2, 700, True)
    again = run_kiosk("key", "upgrade", "--serial", "K-OLD", data_dir=tmp_path)
    assert again.returncode == 0 and "Nothing to do" in again.stdout
    assert "layout 2, 2 credits written to it" in again.stdout
