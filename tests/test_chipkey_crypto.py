"""Chip-key crypto against the published vectors (NIST SP 800-38B, NXP AN10922)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given
from hypothesis import strategies as st

from drivers.chipkey.crypto import (
    aes_cmac,
    cbc_decrypt,
    cbc_encrypt,
    crc32_desfire,
    diversify_key,
    session_key,
    subkeys,
)

NIST_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
NIST_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


def test_nist_subkeys() -> None:
    k1, k2 = subkeys(NIST_KEY)
    assert k1.hex() == "fbeed618357133667c85e08f7236a8de"
    assert k2.hex() == "f7ddac306ae266ccf90bc11ee46d513b"


@pytest.mark.parametrize(
    "length,mac",
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
)
def test_nist_cmac_examples(length: int, mac: str) -> None:
    assert aes_cmac(NIST_KEY, NIST_MSG[:length]).hex() == mac


@given(st.binary(min_size=16, max_size=16), st.binary(max_size=100))
def test_cmac_agrees_with_the_library_when_the_iv_is_zero(key: bytes, msg: bytes) -> None:
    ref = CMAC(algorithms.AES(key))
    ref.update(msg)
    assert aes_cmac(key, msg) == ref.finalize()


def test_a_chained_iv_changes_the_mac() -> None:
    assert aes_cmac(NIST_KEY, b"\x6c\x01", bytes(15) + b"\x01") != aes_cmac(NIST_KEY, b"\x6c\x01")


def test_an10922_aes128_diversification() -> None:
    key = diversify_key(
        bytes.fromhex("00112233445566778899AABBCCDDEEFF"),
        uid=bytes.fromhex("04782E21801D80"),
        aid=bytes.fromhex("3042F5"),
        system_identifier=b"NXP Abu",
    )
    assert key.hex().upper() == "A8DD63A3B89D54B37CA802473FDA9175"


def test_diversified_keys_differ_per_card() -> None:
    master = bytes(range(16))
    a = diversify_key(master, bytes.fromhex("04000000000001"), b"\x4b\x45\x59", b"SWE")
    b = diversify_key(master, bytes.fromhex("04000000000002"), b"\x4b\x45\x59", b"SWE")
    assert a != b and len(a) == len(b) == 16
    with pytest.raises(ValueError):
        diversify_key(master, bytes(30), b"AID", b"X")


def test_session_key_and_crc32() -> None:
    a, b = bytes(range(16)), bytes(range(16, 32))
    assert session_key(a, b) == bytes((0, 1, 2, 3, 16, 17, 18, 19, 12, 13, 14, 15, 28, 29, 30, 31))
    assert crc32_desfire(b"123456789").hex() == "d9c60b34"  # CRC-32/JAMCRC check value, LE


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16), st.integers(1, 4))
def test_cbc_round_trip(key: bytes, iv: bytes, blocks: int) -> None:
    data = bytes(range(16)) * blocks
    assert cbc_decrypt(key, cbc_encrypt(key, data, iv), iv) == data
