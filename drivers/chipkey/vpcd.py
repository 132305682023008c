"""Put a virtual card into the real PC/SC stack: a client of vsmartcard's vpcd reader driver.

vpcd (a pcscd reader driver) listens on TCP 35963 for reader 0 and 35964 for reader 1; a card
connects to it. Each message is a 2-byte big-endian length and a payload: one byte is a control
(00 power off, 01 power on, 02 reset, 04 get ATR), anything longer is a command APDU, answered
with the response APDU. Connecting is inserting the card; closing the socket is pulling it.

`KIOSK_VPCD_SLOT` (0, the default, or 1) picks the reader: two simulated automats on one
machine (or two test workers) each take one, and neither sees the other's keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time

from drivers.chipkey.sim import ATR, CardRemoved, VirtualCard
from drivers.errors import TransportError

log = logging.getLogger(__name__)


def _slot() -> int:
    text = os.environ.get("KIOSK_VPCD_SLOT", "0").strip() or "0"
    if text not in ("0", "1"):
        raise ValueError(f"KIOSK_VPCD_SLOT is {text!r}: vpcd has two readers, 0 and 1")
    return int(text)


#: vpcd's reader for this process (KIOSK_VPCD_SLOT): its port and the name pcscd gives it
SLOT = _slot()
VPCD_PORT = 35963 + SLOT
VPCD_READER = f"Virtual PCD 00 {SLOT:02d}"


class VpcdCard:
    """A `VirtualCard` in a vpcd reader slot."""

    def __init__(
        self,
        card: VirtualCard,
        *,
        host: str = "127.0.0.1",
        port: int = VPCD_PORT,
        stays: bool = False,
        apdu_delay: float = 0.0,
    ) -> None:
        """`stays`: while inserted, connect again whenever the reader drops the card (pcscd
        restarted), as a key left in a real reader is seen again once pcscd is back.
        `apdu_delay`: seconds each APDU takes on top, as over a contactless reader's field
        (some 5-10 ms for a DESFire command at 106 kbit/s with the card's processing)."""
        self.apdu_delay = apdu_delay
        self.card = card
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.stays = stays
        self._held = False  # in the reader (between insert and remove), connected or not
        self._lock = threading.Lock()  # one connection at a time: insert and coming back
        self.apdus = 0

    @property
    def inserted(self) -> bool:
        return self._sock is not None

    def insert(self, timeout: float = 5.0) -> None:
        """Connect to the reader (retrying while vpcd starts); the reader then sees a card."""
        with self._lock:
            self._held = True
            if self._sock is None:
                self._connect(timeout)

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=1.0)
                break
            except OSError as err:
                if time.monotonic() >= deadline:
                    raise TransportError(
                        f"vpcd not reachable at {self.host}:{self.port}: {err}"
                    ) from err
                self._stop.wait(0.05)  # vpcd comes up with pcscd: try again shortly
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._stop.clear()
        self.card.power_on()
        self._thread = threading.Thread(
            target=self._serve, args=(sock,), name="vpcd-card", daemon=True
        )
        self._thread.start()

    def remove(self) -> None:
        """Pull the card out of the reader."""
        with self._lock:
            self._remove()

    def _remove(self) -> None:
        self._held = False
        self._stop.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the other side
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.card.power_off()

    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("vpcd closed the connection")
            out += chunk
            # Without this every APDU waits ~40 ms for the delayed ACK (measured here).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return out

    def _send(self, sock: socket.socket, payload: bytes) -> None:
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self, sock: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                (length,) = struct.unpack(">H", self._recv_exact(sock, 2))
                msg = self._recv_exact(sock, length)
                if len(msg) == 1:
                    ctrl = msg[0]
                    if ctrl == 0x00:
                        self.card.power_off()
                    elif ctrl in (0x01, 0x02):
                        self.card.power_on()
                    elif ctrl == 0x04:
                        self._send(sock, ATR)
                    continue
                self.apdus += 1
                if self.apdu_delay:
                    self._stop.wait(self.apdu_delay)  # the radio's time, not a condition
                try:
                    self._send(sock, self.card.transmit(msg))
                except CardRemoved:
                    log.info("virtual card torn: leaving the reader")
                    self._stop.set()
                    break
        except (OSError, ConnectionError) as err:
            if not self._stop.is_set():
                log.info("vpcd connection ended: %s", err)
        finally:
            if self._sock is sock:
                self._sock = None
            sock.close()
        if self.stays and self._held and not self._stop.is_set():  # the reader went away
            threading.Thread(target=self._come_back, name="vpcd-card-back", daemon=True).start()

    def _come_back(self) -> None:
        while True:
            with self._lock:
                if not self._held or self._stop.is_set() or self._sock is not None:
                    return  # pulled out, or put back in by hand, meanwhile
                try:
                    self._connect(timeout=0.2)
                    return
                except TransportError:
                    pass  # pcscd not back yet
            self._stop.wait(0.2)  # (outside the lock: a remove() can come in) try again
