"""eSSP encryption, pure: the key exchange and the encrypted packet.

Key exchange (Diffie-Hellman, every number sent little-endian in 8 bytes): the host sets a prime
generator (0x4A) and a prime modulus (0x4B), then sends its intermediate key g^a mod n (0x4C);
the device answers with its own, g^b mod n. Both then hold the negotiated key g^ab mod n. The
AES-128 key is the 64-bit fixed key (set in the device, 0123456701234567 from the factory) in
its low eight bytes and the negotiated key in its high eight.

The numbers are below 2**31 although the fields are 64 bits wide. ITL's own host code, which the
SSP manual (GA138, "Encryption Keys": "C code for the exchange algorithm is available from
ITL") points to, draws the generator, the modulus and the secret below 2**31
(MAX_PRIME_NUMBER and MAX_RANDOM_INTEGER = 2147483648 in the SDK's Random.h, published in
Minege/eSSP _eSSP/lib/Random.h; the same bound in ITL's C# SSPComms.cs) and computes
x^y mod n with signed 64-bit products (`result * result % N` in XpowYmodN, Random.c). Such a
product is exact only while n < 2**31.5: with our former 63-bit primes the device's arithmetic
overflows, it derives another key than the host, and every encrypted packet fails its CRC. A
device's firmware is not published; what it is known to accept is what ITL's host code sends,
so we send the same: primes and secrets below 2**31. (The SSP manual's own example primes,
982451653 and 1287821, are below it too.)

The encrypted packet travels as the data of an ordinary frame: 0x7E, then AES-128-ECB over
`eLEN eCOUNT(4) DATA PACKING eCRC(2)`, padded with random bytes to whole 16-byte blocks; eLEN
is the length of DATA, eCOUNT the packet count and eCRC the frame CRC over everything before it.
The count (eCOUNT), reset to 0 by each key exchange: the host's command carries the count both
sides hold, N; the device, having decrypted it, counts on and answers with N + 1; the next
command carries N + 1. So ITL's SDK (SSPComs.c / ITLSSPProc.c in Minege/eSSP: the host's count
goes up when it encrypts a command and the reply must carry the count after it, the decrypted
reply does not count again) and kybarg/encrypted-smiley-secure-protocol (src/index.js: the next
command carries the reply's count). GA138 says a packet whose count is not the receiver's is
discarded: a replay, or a reply to another command.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.errors import FrameError
from drivers.essp.codec import crc16

STEX = 0x7E
DEFAULT_FIXED_KEY = 0x0123456701234567


def is_prime(n: int) -> bool:
    """Miller-Rabin, deterministic below 3.3e24 with these bases (enough for 64 bits)."""
    if n < 2:
        return False
    small = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in small:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


#: generator, modulus and secrets stay below this (ITL SDK Random.h MAX_PRIME_NUMBER and
#: MAX_RANDOM_INTEGER; see the module's docstring)
KEY_LIMIT = 2**31


def random_prime(bits: int = 31) -> int:
    """A random prime of `bits` bits (31: below KEY_LIMIT, what the device's arithmetic takes)."""
    while True:
        n = secrets.randbits(bits) | 1 << (bits - 1) | 1
        if is_prime(n):
            return n


def _wrap64(n: int) -> int:
    """A C `long long` after overflow (two's complement)."""
    return (n + 2**63) % 2**64 - 2**63


def _c_mod(a: int, n: int) -> int:
    """C's `%`: the sign of the dividend."""
    r = abs(a) % n
    return -r if a < 0 else r


def xpow_ymod_n_64(x: int, y: int, n: int) -> int:
    """x^y mod n the way ITL's SDK computes it (Random.c XpowYmodN): square and multiply over
    the 64 bits of y with signed 64-bit products. Exact below n = 2**31.5; above, the products
    overflow and the result is not x^y mod n. The simulator uses it, as a device whose
    firmware shares ITL's arithmetic would."""
    if y == 1:
        return _c_mod(x, n)
    result = 1
    for i in range(63, -1, -1):
        result = _c_mod(_wrap64(result * result), n)
        if y >> i & 1:
            result = _c_mod(_wrap64(result * x), n)
    return result


def u64(n: int) -> bytes:
    return n.to_bytes(8, "little")


@dataclass(frozen=True)
class Exchange:
    """One side of the key exchange: its secret and the public numbers."""

    generator: int
    modulus: int
    secret: int

    @classmethod
    def start(cls, generator: int | None = None, modulus: int | None = None) -> Exchange:
        """New numbers; the generator below the modulus (the SDK's InitiateSSPHostKeys means
        to order them so, and g < n is what Diffie-Hellman needs)."""
        g = generator or random_prime()
        n = modulus or random_prime()
        while g == n:
            n = random_prime()
        if generator is None and modulus is None and g > n:
            g, n = n, g
        return cls(g, n, secrets.randbelow(KEY_LIMIT - 2) + 2)

    @property
    def intermediate(self) -> int:
        return pow(self.generator, self.secret, self.modulus)

    def key(self, other_intermediate: int) -> int:
        return pow(other_intermediate, self.secret, self.modulus)


def aes_key(fixed: int, negotiated: int) -> bytes:
    return u64(fixed) + u64(negotiated)


class Session:
    """Encrypts and decrypts packets with one negotiated key and the packet count."""

    def __init__(self, key: bytes, *, random: bool = True) -> None:
        if len(key) != 16:
            raise ValueError("an eSSP key is 16 bytes")
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 (the protocol's)
        self.count = 0
        self._random = random

    def wrap(self, data: bytes, count: int | None = None) -> bytes:
        """DATA as the frame data of an encrypted packet with `count` (the current count)."""
        count = self.count if count is None else count
        body = bytes((len(data),)) + count.to_bytes(4, "little") + data
        pad = -(len(body) + 2) % 16
        body += secrets.token_bytes(pad) if self._random else bytes(pad)
        crc = crc16(body)
        body += bytes((crc & 0xFF, crc >> 8))
        enc = self._cipher.encryptor()
        return bytes((STEX,)) + enc.update(body) + enc.finalize()

    def unwrap(self, packet: bytes, count: int | None = None) -> bytes:
        """The DATA of an encrypted packet carrying `count` (the current count); FrameError
        if it is not one (bad CRC, another count, not whole blocks)."""
        want = self.count if count is None else count
        if not packet or packet[0] != STEX or (len(packet) - 1) % 16 or len(packet) < 17:
            raise FrameError(f"not an encrypted packet: {packet[:4].hex(' ')}")
        dec = self._cipher.decryptor()
        body = dec.update(packet[1:]) + dec.finalize()
        if crc16(body[:-2]) != body[-2] | body[-1] << 8:
            raise FrameError("encrypted packet: CRC does not match (wrong key?)")
        n, count = body[0], int.from_bytes(body[1:5], "little")
        if count != want:
            raise FrameError(f"encrypted packet count {count}, expected {want}")
        if 5 + n > len(body) - 2:
            raise FrameError("encrypted packet: length beyond its blocks")
        return body[5 : 5 + n]

    @property
    def reply_count(self) -> int:
        """The count the device's answer to the next command carries."""
        return (self.count + 1) & 0xFFFFFFFF

    def next(self) -> None:
        """One command and its answer done (host), or one command decrypted (device): count on
        (once per exchange on both sides)."""
        self.count = self.reply_count
