"""Crypto for DESFire EV1 AES: CMAC with a chained IV, AN10922 diversification, session keys,
CRC32, and AES-CBC. The block cipher is the `cryptography` package's AES; nothing here is a
cipher of our own, only the modes DESFire defines around it (NIST SP 800-38B for CMAC).
"""

from __future__ import annotations

import zlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

BLOCK = 16
_RB = 0x87  # the CMAC constant for 128-bit blocks


def _check_key(key: bytes) -> None:
    if len(key) != 16:
        raise ValueError(f"an AES-128 key is 16 bytes, got {len(key)}")


def aes_ecb(key: bytes, block: bytes) -> bytes:
    _check_key(key)
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def cbc_encrypt(key: bytes, data: bytes, iv: bytes = bytes(16)) -> bytes:
    _check_key(key)
    if len(data) % BLOCK:
        raise ValueError("CBC data must be whole blocks")
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def cbc_decrypt(key: bytes, data: bytes, iv: bytes = bytes(16)) -> bytes:
    _check_key(key)
    if len(data) % BLOCK:
        raise ValueError("CBC data must be whole blocks")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()


def _shift(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    out = (n & ((1 << 128) - 1)).to_bytes(16, "big")
    return out if not block[0] & 0x80 else out[:-1] + bytes((out[-1] ^ _RB,))


def subkeys(key: bytes) -> tuple[bytes, bytes]:
    """CMAC subkeys K1, K2 (SP 800-38B 6.1)."""
    k1 = _shift(aes_ecb(key, bytes(16)))
    return k1, _shift(k1)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _cmac_blocks(key: bytes, message: bytes, iv: bytes, min_blocks: int) -> bytes:
    k1, k2 = subkeys(key)
    length = max(min_blocks * BLOCK, -(-len(message) // BLOCK) * BLOCK, BLOCK)
    if len(message) == length:
        last = _xor(message[-BLOCK:], k1)
        body = message[:-BLOCK]
    else:
        padded = message + b"\x80" + bytes(length - len(message) - 1)
        last = _xor(padded[-BLOCK:], k2)
        body = padded[:-BLOCK]
    return cbc_encrypt(key, body + last, iv)[-BLOCK:]


def aes_cmac(key: bytes, message: bytes, iv: bytes = bytes(16)) -> bytes:
    """AES-CMAC (16 bytes). With a non-zero `iv` it is DESFire EV1's chained CMAC."""
    if len(iv) != BLOCK:
        raise ValueError("the IV is 16 bytes")
    return _cmac_blocks(key, message, iv, 1)


def diversify_key(master_key: bytes, uid: bytes, aid: bytes, system_identifier: bytes) -> bytes:
    """AES-128 key diversification (NXP AN10922 2.2): CMAC over 01 || UID || AID || SysID,
    always padded to two blocks."""
    m = uid + aid + system_identifier
    if not 1 <= len(m) <= 31:
        raise ValueError(f"diversification input must be 1..31 bytes, got {len(m)}")
    return _cmac_blocks(master_key, b"\x01" + m, bytes(16), 2)


def session_key(rnd_a: bytes, rnd_b: bytes) -> bytes:
    """EV1 AES session key: RndA[0..3] RndB[0..3] RndA[12..15] RndB[12..15]."""
    if len(rnd_a) != 16 or len(rnd_b) != 16:
        raise ValueError("RndA and RndB are 16 bytes")
    return rnd_a[0:4] + rnd_b[0:4] + rnd_a[12:16] + rnd_b[12:16]


def crc32_desfire(data: bytes) -> bytes:
    """DESFire CRC32: initial FFFFFFFF, no final XOR, little-endian (= ~zlib.crc32)."""
    return (~zlib.crc32(data) & 0xFFFFFFFF).to_bytes(4, "little")


def rotate_left(data: bytes) -> bytes:
    return data[1:] + data[:1]
