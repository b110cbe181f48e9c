"""Raw-socket helpers for talking memcached text, meta and binary protocols.

The suites use raw sockets instead of a client library because they check the
exact bytes a server answers (reply words, error strings, flag order), which a
client library would hide or normalise. Everything here is bounded: every read
has a timeout and every wait loop has a deadline, so a misbehaving server makes
a test fail instead of hanging the run.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

DEFAULT_TIMEOUT = 10.0


class ServerClosed(Exception):
    """The server closed the connection while a reply was still expected."""


def parse_hostport(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 in brackets allowed) into its parts."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def free_port() -> int:
    """Ask the kernel for a free loopback port.

    There is a small window in which another process could take the port before
    the server binds it; the callers retry a server start once if that happens.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 30.0, proc=None) -> None:
    """Poll ``connect`` until the server accepts, the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as err:
            last_err = err
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not accepting after {timeout}s: {last_err}")


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("State:"):
                    return "Z" not in line.split()[1]
    except FileNotFoundError:
        return False
    return True


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, read from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Conn:
    """One TCP connection with a read buffer and strict, bounded reads."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = bytearray()

    # -- context manager -------------------------------------------------
    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- raw io ----------------------------------------------------------
    def send(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ServerClosed(f"connection closed; unread buffer {bytes(self.buf)!r}")
        self.buf += chunk

    def readline(self, bare_lf: bool = False) -> bytes:
        """One reply line without its ``\\r\\n``; a bare ``\\n`` is a failure unless
        ``bare_lf`` (metadump entries end with one)."""
        while True:
            idx = self.buf.find(b"\n")
            if idx >= 0:
                line = bytes(self.buf[: idx + 1])
                del self.buf[: idx + 1]
                if line.endswith(b"\r\n"):
                    return line[:-2]
                if not bare_lf:
                    raise AssertionError(f"reply line not terminated by \\r\\n: {line!r}")
                return line[:-1]
            if len(self.buf) > 1 << 20:
                raise AssertionError("reply line longer than 1 MiB")
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_block(self, n: int) -> bytes:
        """A data block of ``n`` bytes followed by ``\\r\\n``."""
        data = self.read_exact(n + 2)
        if data[-2:] != b"\r\n":
            raise AssertionError(f"data block not terminated by \\r\\n: {data[-8:]!r}")
        return data[:-2]

    def expect_closed(self, timeout: float = 5.0) -> bytes:
        """Wait for EOF (or reset) and return whatever arrived before it.

        Fails if the server keeps the connection open past ``timeout``.
        """
        deadline = time.monotonic() + timeout
        got = bytes(self.buf)
        self.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout}s; got {got!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return got
            finally:
                self.sock.settimeout(self.timeout)
            if not chunk:
                return got
            got += chunk

    def nothing_pending(self, wait: float = 0.2) -> bool:
        """True if no byte arrives within ``wait`` seconds (used for quiet modes)."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        if chunk:
            self.buf += chunk
        return False

    # -- text protocol ---------------------------------------------------
    def cmd(self, line: bytes | str) -> bytes:
        """Send one command line and return the first reply line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.readline()

    def store(self, verb: str, key: str, value: bytes | str, flags: int = 0,
              exptime: int = 0, extra: str = "") -> bytes:
        if isinstance(value, str):
            value = value.encode()
        tail = f" {extra}" if extra else ""
        self.send(f"{verb} {key} {flags} {exptime} {len(value)}{tail}\r\n".encode()
                  + value + b"\r\n")
        return self.readline()

    def set(self, key: str, value: bytes | str, flags: int = 0, exptime: int = 0) -> bytes:
        return self.store("set", key, value, flags, exptime)

    def read_values(self) -> list[tuple[str, int, bytes, int | None]]:
        """Read ``VALUE`` items up to ``END``: (key, flags, data, cas or None)."""
        items = []
        while True:
            line = self.readline()
            if line == b"END":
                return items
            parts = line.split(b" ")
            if parts[0] != b"VALUE" or len(parts) not in (4, 5):
                raise AssertionError(f"unexpected retrieval line {line!r}")
            data = self.read_block(int(parts[3]))
            cas = int(parts[4]) if len(parts) == 5 else None
            items.append((parts[1].decode(), int(parts[2]), data, cas))

    def get(self, key: str) -> bytes | None:
        self.send(f"get {key}\r\n")
        items = self.read_values()
        if not items:
            return None
        assert len(items) == 1 and items[0][0] == key, items
        return items[0][2]

    def gets(self, key: str) -> tuple[bytes, int, int] | None:
        """(data, flags, cas) or None."""
        self.send(f"gets {key}\r\n")
        items = self.read_values()
        if not items:
            return None
        assert len(items) == 1 and items[0][0] == key, items
        k, flags, data, cas = items[0]
        assert cas is not None
        return data, flags, cas

    def stats(self, arg: str = "") -> dict[str, str]:
        self.send(f"stats {arg}".rstrip() + "\r\n")
        out = {}
        while True:
            line = self.readline()
            if line == b"END":
                return out
            parts = line.split(b" ", 2)
            if parts[0] != b"STAT" or len(parts) != 3:
                raise AssertionError(f"unexpected stats line {line!r}")
            out[parts[1].decode()] = parts[2].decode()


@dataclass
class MetaReply:
    """A parsed meta reply: code, optional value, and the flag tokens."""

    code: str
    size: int | None
    flags: list[str]
    value: bytes | None

    def flag(self, name: str) -> str | None:
        """The token of return flag ``name`` (``""`` if it has none)."""
        for tok in self.flags:
            if tok[:1] == name:
                return tok[1:]
        return None

    def has(self, name: str) -> bool:
        return any(tok[:1] == name for tok in self.flags)


def read_meta(conn: Conn) -> MetaReply:
    """Read one meta reply (``VA`` with its data block, or a one-line code)."""
    line = conn.readline()
    parts = line.decode("latin-1").split(" ")
    if parts[0] == "VA":
        size = int(parts[1])
        return MetaReply("VA", size, parts[2:], conn.read_block(size))
    if parts[0] in ("HD", "EN", "NS", "EX", "NF", "MN"):
        return MetaReply(parts[0], None, [p for p in parts[1:] if p], None)
    raise AssertionError(f"not a meta reply: {line!r}")


def meta(conn: Conn, line: str, data: bytes | None = None) -> MetaReply:
    """Send one meta command (with ``data`` for ms) and parse the reply."""
    payload = line.encode() + b"\r\n"
    if data is not None:
        payload += data + b"\r\n"
    conn.send(payload)
    return read_meta(conn)


# -- binary protocol --------------------------------------------------------

REQ_MAGIC = 0x80
RES_MAGIC = 0x81
BIN_HEADER = struct.Struct(">BBHBBHIIQ")

OP_GET = 0x00
OP_SET = 0x01
OP_NOOP = 0x0A
OP_VERSION = 0x0B


@dataclass
class BinReply:
    """One binary-protocol response frame."""

    magic: int
    opcode: int
    status: int
    opaque: int
    cas: int
    extras: bytes
    key: bytes
    value: bytes


def bin_request(opcode: int, key: bytes = b"", value: bytes = b"", extras: bytes = b"",
                opaque: int = 0, cas: int = 0, body_len: int | None = None) -> bytes:
    """Build a request frame; ``body_len`` overrides the computed length (lies on purpose)."""
    total = len(extras) + len(key) + len(value) if body_len is None else body_len
    header = BIN_HEADER.pack(REQ_MAGIC, opcode, len(key), len(extras), 0, 0, total,
                             opaque, cas)
    return header + extras + key + value


def read_bin(conn: Conn) -> BinReply:
    head = conn.read_exact(24)
    magic, opcode, keylen, extlen, _dt, status, total, opaque, cas = BIN_HEADER.unpack(head)
    if total > 64 << 20:
        raise AssertionError(f"absurd response body length {total}")
    body = conn.read_exact(total)
    return BinReply(magic, opcode, status, opaque, cas, body[:extlen],
                    body[extlen:extlen + keylen], body[extlen + keylen:])


def random_bytes(n: int, seed: int) -> bytes:
    """Deterministic pseudo-random bytes so a failing run can be reproduced."""
    import random

    return random.Random(seed).randbytes(n)


def unique(prefix: str) -> str:
    """A key prefix that no other test (or earlier run on a kept server) uses."""
    return f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"
