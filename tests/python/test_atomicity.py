"""Read-modify-write commands from many connections at once, and overwrites across a crash.

The other suites send one command at a time, and the crash tests write each key once.
These tests are about what only shows under concurrency or after recovery:

* ``incr``/``decr``, ``cas``, ``add`` and ``append`` decide on the current item and
  write a new one. Sent from many connections (and all three protocols) at the same key,
  no update may be lost and no two may see the same state. Each client checks this
  against memcached too (``--target memcached``), so the expectations are memcached's.
* After ``kill -9``, a key written many times must hold its last acknowledged value (or a
  later one that was in flight), never an older one: a recovery that replays or orders
  versions wrongly shows as a value going back in time, which unique keys cannot show.
"""

from __future__ import annotations

import struct
import threading
import time

import pytest

from mcwire import Conn, ServerClosed, bin_request, meta, read_bin, unique

THREADS = 8
OP_INCREMENT = 0x05


def run_threads(count: int, work) -> list:
    """Run ``work(i)`` on ``count`` threads started together; returns their results and
    re-raises the first failure (a thread's assertion would otherwise be lost)."""
    results: list = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def body(i: int) -> None:
        try:
            start.wait(timeout=10)
            results[i] = work(i)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            errors.append(err)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a client thread did not finish"
    if errors:
        raise errors[0]
    return results


def incr_text(conn: Conn, key: str) -> int:
    reply = conn.cmd(f"incr {key} 1")
    assert reply.isdigit(), f"incr: {reply!r}"
    return int(reply)


def incr_meta(conn: Conn, key: str) -> int:
    reply = meta(conn, f"ma {key} v")
    assert reply.code == "VA" and reply.value is not None, reply
    return int(reply.value)


def incr_binary(conn: Conn, key: str) -> int:
    # delta 1; the initial value and expiry matter only for a missing key, and the
    # expiry 0xffffffff says "do not create it".
    extras = struct.pack(">QQI", 1, 0, 0xFFFFFFFF)
    conn.send(bin_request(OP_INCREMENT, key.encode(), extras=extras))
    reply = read_bin(conn)
    assert reply.status == 0, f"binary increment status {reply.status:#x}: {reply.value!r}"
    (value,) = struct.unpack(">Q", reply.value)
    return value


def test_concurrent_increments_each_see_a_distinct_value(connect, server_addr):
    # Every increment of 1 returns the counter after it. Linearizable increments from
    # any mix of connections return each of 1..N exactly once; a lost update returns a
    # value twice, and the final value falls short.
    key = unique("atom_incr")
    assert connect().set(key, "0") == b"STORED"
    per_thread = 300
    protocols = (incr_text, incr_meta, incr_binary)

    def work(i: int) -> list[int]:
        incr = protocols[i % len(protocols)]
        with Conn(*server_addr, timeout=30) as c:
            return [incr(c, key) for _ in range(per_thread)]

    seen = [v for per in run_threads(THREADS, work) for v in per]
    total = THREADS * per_thread
    assert sorted(seen) == list(range(1, total + 1)), (
        f"{total - len(set(seen))} increments returned a value another one returned")
    assert connect().get(key) == str(total).encode()


def test_concurrent_decrements_stop_at_zero_without_losing_any(connect, server_addr):
    key = unique("atom_decr")
    start = 1000
    assert connect().set(key, str(start)) == b"STORED"
    per_thread = 200  # 1,600 decrements of 1 from 1,000: 1,000 reach a value, 600 floor

    def work(_i: int) -> list[int]:
        with Conn(*server_addr, timeout=30) as c:
            out = []
            for _ in range(per_thread):
                reply = c.cmd(f"decr {key} 1")
                assert reply.isdigit(), f"decr: {reply!r}"
                out.append(int(reply))
            return out

    seen = [v for per in run_threads(THREADS, work) for v in per]
    above_zero = sorted(v for v in seen if v > 0)
    assert above_zero == list(range(1, start)), "a decrement was lost or applied twice"
    assert seen.count(0) == THREADS * per_thread - (start - 1)
    # protocol.txt: a decrement that shortens the number MAY leave it space-padded, and
    # memcached does.
    assert connect().get(key).rstrip(b" ") == b"0"


def test_cas_retry_loops_lose_no_update(connect, server_addr):
    # The classic optimistic loop: gets, add one, cas; retry on EXISTS. Every STORED must
    # have been the only writer since its gets, so the count ends exact.
    key = unique("atom_cas")
    assert connect().set(key, "0") == b"STORED"
    per_thread = 60

    def work(_i: int) -> tuple[list[int], int]:
        stored, conflicts = [], 0
        with Conn(*server_addr, timeout=30) as c:
            while len(stored) < per_thread:
                data, flags, cas = c.gets(key)
                new = int(data) + 1
                reply = c.store("cas", key, str(new), flags=flags, extra=str(cas))
                if reply == b"STORED":
                    stored.append(new)
                else:
                    assert reply == b"EXISTS", f"cas: {reply!r}"
                    conflicts += 1
                assert conflicts < 100_000, "cas never succeeds"
        return stored, conflicts

    results = run_threads(THREADS, work)
    written = sorted(v for stored, _ in results for v in stored)
    total = THREADS * per_thread
    assert written == list(range(1, total + 1)), "two cas writes won from the same state"
    assert connect().get(key) == str(total).encode()


def test_add_from_many_connections_has_one_winner(connect, server_addr):
    prefix = unique("atom_add")
    rounds = 40

    def work(i: int) -> list[bool]:
        wins = []
        with Conn(*server_addr, timeout=30) as c:
            for r in range(rounds):
                reply = c.store("add", f"{prefix}_{r}", f"writer {i}")
                assert reply in (b"STORED", b"NOT_STORED"), f"add: {reply!r}"
                wins.append(reply == b"STORED")
        return wins

    results = run_threads(THREADS, work)
    check = connect()
    for r in range(rounds):
        winners = [i for i in range(THREADS) if results[i][r]]
        assert len(winners) == 1, f"round {r}: add stored for writers {winners}"
        assert check.get(f"{prefix}_{r}") == f"writer {winners[0]}".encode()


def test_appends_from_many_connections_keep_every_piece_in_order(connect, server_addr):
    key = unique("atom_append")
    assert connect().set(key, "") == b"STORED"
    per_thread = 150

    def work(i: int) -> None:
        with Conn(*server_addr, timeout=30) as c:
            for n in range(per_thread):
                assert c.store("append", key, f"{i}.{n};") == b"STORED"

    run_threads(THREADS, work)
    pieces = connect().get(key).decode().rstrip(";").split(";")
    assert len(pieces) == THREADS * per_thread, "an append was lost or doubled"
    for i in range(THREADS):
        mine = [int(p.split(".")[1]) for p in pieces if p.split(".")[0] == str(i)]
        assert mine == list(range(per_thread)), f"writer {i}'s appends out of order or lost"


# -- across a crash (murakumo only) --------------------------------------------

KEYS_PER_WRITER = 8
# 100 B records stay in the tree; 6,000 and 20,000 B ones go to blob files (4 KiB and
# more), so the recovery of both is exercised, and with -m 8 (4 MiB memtables) the
# memtables are flushed several times during the load.
SIZES = (100, 6000, 20000)


def versioned_value(key: str, n: int) -> bytes:
    head = f"{key}|{n}|".encode()
    size = SIZES[n % len(SIZES)]
    return head + bytes((n * 7 + i) % 251 for i in range(size - len(head)))


def version_of(key: str, data: bytes) -> int:
    name, n, _rest = data.split(b"|", 2)
    assert name.decode() == key, f"{key} holds another key's value"
    return int(n)


class OverwriteLoad:
    """Writers that each overwrite their own keys with rising versions until stopped."""

    def __init__(self, addr, tag: str, writers: int = THREADS):
        self.addr = addr
        self.keys = [[f"{tag}_w{w}_k{k}" for k in range(KEYS_PER_WRITER)] for w in range(writers)]
        self.acked: dict[str, int] = {}
        self.in_flight: dict[str, int] = {}
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True)
                        for w in range(writers)]

    def _run(self, w: int) -> None:
        try:
            conn = Conn(*self.addr, timeout=10)
        except OSError as err:
            self.errors.append(f"writer {w}: {err}")
            return
        try:
            for n in range(1_000_000):
                if self.stop.is_set():
                    return
                key = self.keys[w][n % KEYS_PER_WRITER]
                self.in_flight[key] = n
                reply = conn.set(key, versioned_value(key, n))
                if reply != b"STORED":
                    self.errors.append(f"{key}: {reply!r}")
                    return
                self.acked[key] = n
                del self.in_flight[key]
        except (ServerClosed, OSError):
            return
        finally:
            conn.close()

    def run_then(self, seconds: float, kill) -> None:
        for t in self.threads:
            t.start()
        time.sleep(seconds)
        kill()
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a writer did not stop"
        assert not self.errors, self.errors[:5]


def check_overwrites(addr, load: OverwriteLoad, earlier: dict[str, int]) -> dict[str, int]:
    """After a restart: each key of ``load`` holds its last acknowledged version or the one
    in flight, exact; each key of ``earlier`` (not written since) still holds the version
    found then. Returns the versions found, to pass as ``earlier`` next time."""
    found_now: dict[str, int] = dict(earlier)
    with Conn(*addr, timeout=60) as c:
        for key, n in earlier.items():
            data = c.get(key)
            assert data is not None and version_of(key, data) == n, (
                f"{key}: a later restart changed it from version {n}")
        for key, n in load.acked.items():
            data = c.get(key)
            assert data is not None, f"{key}: acknowledged version {n} lost"
            found = version_of(key, data)
            assert found in {n, load.in_flight.get(key)}, (
                f"{key}: version {found} after the restart, acknowledged {n}"
                + (" (older: a write undone)" if found < n else ""))
            assert data == versioned_value(key, found), f"{key}: damaged value"
            found_now[key] = found
    return found_now


@pytest.mark.parametrize("sync", ["always", "default"])
def test_kill9_keeps_the_latest_acknowledged_overwrite(murakumo_factory, tmp_path, sync):
    srv = murakumo_factory(data_dir=tmp_path / "data", cache_mb=8,
                           sync=None if sync == "default" else sync)
    found: dict[str, int] = {}
    for rnd in range(2):
        load = OverwriteLoad(srv.addr, f"ow{rnd}")
        load.run_then(2.5, srv.kill9)
        assert len(load.acked) == THREADS * KEYS_PER_WRITER, "too few writes acknowledged"
        srv.start()
        found = check_overwrites(srv.addr, load, found)
    srv.terminate()


def test_kill9_loses_no_acknowledged_increment(murakumo_factory, tmp_path):
    srv = murakumo_factory(data_dir=tmp_path / "data", sync="always")
    counters = [f"ctr{i}" for i in range(4)]
    with Conn(*srv.addr) as c:
        for key in counters:
            assert c.set(key, "0") == b"STORED"
    highest = {key: 0 for key in counters}
    sent = {key: 0 for key in counters}
    lock = threading.Lock()
    stop = threading.Event()

    def work(i: int) -> None:
        try:
            with Conn(*srv.addr, timeout=10) as c:
                for n in range(1_000_000):
                    if stop.is_set():
                        return
                    key = counters[(i + n) % len(counters)]
                    with lock:
                        sent[key] += 1
                    value = incr_text(c, key)
                    with lock:
                        highest[key] = max(highest[key], value)
        except (ServerClosed, OSError):
            return

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert min(highest.values()) > 10, f"too few increments acknowledged: {highest}"
    srv.start()
    with Conn(*srv.addr) as c:
        for key in counters:
            value = int(c.get(key))
            # Each acknowledged increment returned the count so far, so the counter holds
            # at least the highest count returned; at most every one sent was applied.
            assert highest[key] <= value <= sent[key], (
                f"{key}: {value} after the restart, acknowledged up to {highest[key]}, "
                f"{sent[key]} sent")
    srv.terminate()

