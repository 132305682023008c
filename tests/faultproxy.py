"""A TCP proxy on 127.0.0.1 in front of the head-office server that injects faults per
connection: "500", "429" (with Retry-After), "slow" (answers after a delay), "reset" (the request
reaches the server, then the connection is cut before the answer), or passes through."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque


class FaultProxy:
    def __init__(self, target_port: int, slow_seconds: float = 3.0) -> None:
        self.target = ("127.0.0.1", target_port)
        self.slow_seconds = slow_seconds
        self.faults: deque[str] = deque()
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        self._server.close()
        self._thread.join(5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            fault = self.faults.popleft() if self.faults else ""
            threading.Thread(target=self._handle, args=(client, fault), daemon=True).start()

    @staticmethod
    def _read_request(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(body) < length:
            body += sock.recv(65536)
        return head + b"\r\n\r\n" + body

    def _handle(self, client: socket.socket, fault: str) -> None:
        with client:
            request = self._read_request(client)
            if fault in ("500", "429"):
                reason = b"Internal Server Error" if fault == "500" else b"Too Many Requests"
                extra = b"Retry-After: 7\r\n" if fault == "429" else b""
                client.sendall(
                    b"HTTP/1.1 "
                    + fault.encode()
                    + b" "
                    + reason
                    + b"\r\n"
                    + extra
                    + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            if fault == "slow":
                self._stop.wait(self.slow_seconds)
            with socket.create_connection(self.target) as upstream:
                upstream.sendall(request)
                response = b""
                while True:
                    chunk = upstream.recv(65536)
                    if not chunk:
                        break
                    response += chunk
                    if b"\r\n\r\n" in response:
                        head, _, body = response.partition(b"\r\n\r\n")
                        n = next(
                            (
                                int(x.split(b":")[1])
                                for x in head.split(b"\r\n")
                                if x.lower().startswith(b"content-length:")
                            ),
                            None,
                        )
                        if n is not None and len(body) >= n:
                            break
                if fault == "reset":  # the server has stored it; the answer never arrives
                    client.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                    client.sendall(response[: len(response) // 3])
                    return
                # One request per connection here: say so, or the client may send its next
                # request on this socket after we closed it (and read a reset).
                head, _, body = response.partition(b"\r\n\r\n")
                kept = [h for h in head.split(b"\r\n") if not h.lower().startswith(b"connection:")]
                client.sendall(b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n" + body)
