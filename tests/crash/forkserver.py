"""Automat processes for the crash matrix, without paying for Python's imports in each one.

A cell starts the automat two or three times, and more than half of each start was importing
it (about 1.1 s of CPU on this machine, against well under a second of the automat's own work).
So a server process imports the automat once and forks a child per request: the standard
library's forkserver idea, with the child's stdin, stdout and stderr passed over a Unix socket.
The server is single-threaded (nothing runs in it but imports and this loop), so a fork is
safe; each child is a fresh automat that shares nothing but the imported code.

`spawn(args, cwd, env, stderr)` gives a `Forked`, which is used like `subprocess.Popen`:
`stdin`, `stdout`, `pid`, `poll()`, `wait(timeout)`, `kill()`, `returncode` (negative: the
signal that ended it).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Any

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Forked:
    """A child of the fork server, seen from the harness."""

    def __init__(self, pid: int, stdin: IO[str], stdout: IO[str]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None
        self.ended = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"automat {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The harness's end: one server process, any number of children."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.crash.forkserver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], cwd=ROOT,
        )  # fmt: skip
        theirs.close()
        self._lock = threading.Lock()  # one request at a time
        self._started: list[int] = []
        self._got_pid = threading.Condition()
        self._children: dict[int, Forked] = {}
        self._early: dict[int, int] = {}  # exits heard before the harness knew the child
        threading.Thread(target=self._listen, name="forkserver", daemon=True).start()

    def spawn(self, args: list[str], cwd: str, env: dict[str, str], stderr: IO[Any]) -> Forked:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        with self._lock:
            msg = json.dumps({"args": args, "cwd": cwd, "env": env}).encode()
            socket.send_fds(self.sock, [msg], [in_r, out_w, stderr.fileno()])
            os.close(in_r)
            os.close(out_w)
            with self._got_pid:
                while not self._started:
                    if not self._got_pid.wait(30):
                        raise RuntimeError("the fork server did not answer")
                pid = self._started.pop(0)
                child = Forked(pid, open(in_w, "w"), open(out_r))  # noqa: SIM115
                self._children[pid] = child
                if pid in self._early:
                    self._ended(child, self._early.pop(pid))
        return child

    def _listen(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:
                return
            msg = json.loads(data)
            with self._got_pid:
                if "pid" in msg:
                    self._started.append(msg["pid"])
                    self._got_pid.notify_all()
                elif "exited" in msg:
                    child = self._children.get(msg["exited"])
                    if child is None:
                        self._early[msg["exited"]] = msg["status"]
                    else:
                        self._ended(child, msg["status"])

    @staticmethod
    def _ended(child: Forked, status: int) -> None:
        child.returncode = status
        child.ended.set()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---------------------------------------------------------------- the server process


def serve(sock: socket.socket) -> None:
    import tests.crash.child  # noqa: F401  (the imports every child would pay for)

    children: set[int] = set()
    while True:
        readable, _, _ = select.select([sock], [], [], 0.05)
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                sock.send(json.dumps({"exited": pid, "status": code}).encode())
        if not readable:
            continue
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
        if not msg:  # the harness is done
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return
        request = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            _child(sock, fds, request)  # never returns
        for fd in fds:
            os.close(fd)
        children.add(pid)
        sock.send(json.dumps({"pid": pid}).encode())


def _child(sock: socket.socket, fds: list[int], request: dict[str, Any]) -> None:
    code = 1
    try:
        sock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["tests.crash.child", *request["args"]]
        from tests.crash.child import main

        code = main()
    except SystemExit as end:
        code = end.code if isinstance(end.code, int) else 1
    except BaseException:  # the child's top: say what happened, then end with a failure
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
