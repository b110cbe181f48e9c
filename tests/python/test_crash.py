"""Durability: kill -9 and SIGTERM under write load, then restart on the same data dir.

Every write the server acknowledged (STORED) must come back with its exact value.
Writes that were in flight when the process died may be present or absent, but if
present their value must be exact too. Murakumo only: memcached keeps nothing
across restarts, so these are skipped with ``--target memcached``.
"""

from __future__ import annotations

import hashlib
import threading
import time

from mcwire import Conn, ServerClosed

WRITERS = 8
LOAD_SECONDS = 2.0
MAX_OPS_PER_WRITER = 200_000


def value_for(key: str) -> bytes:
    """A value derived from the key, of varying length, so a mix-up shows."""
    digest = hashlib.sha256(key.encode()).hexdigest().encode()
    return digest * (1 + int(digest[:2], 16) % 8)


class WriteLoad:
    """``WRITERS`` threads, one connection each, writing unique keys until stopped."""

    def __init__(self, addr: tuple[str, int], tag: str):
        self.addr = addr
        self.tag = tag
        self.stop = threading.Event()
        self.acked: list[list[str]] = [[] for _ in range(WRITERS)]
        self.in_flight: list[str | None] = [None] * WRITERS
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(WRITERS)]

    def _run(self, idx: int) -> None:
        try:
            conn = Conn(*self.addr, timeout=10)
        except OSError as err:
            self.errors.append(f"writer {idx} could not connect: {err}")
            return
        try:
            for n in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set():
                    return
                key = f"{self.tag}_w{idx}_{n}"
                self.in_flight[idx] = key
                reply = conn.set(key, value_for(key), flags=n % 65536)
                if reply != b"STORED":
                    self.errors.append(f"{key}: unexpected reply {reply!r}")
                    return
                self.acked[idx].append(key)
                self.in_flight[idx] = None
        except (ServerClosed, OSError):
            return  # the server went away mid-request: that write is in flight
        finally:
            conn.close()

    def start(self) -> "WriteLoad":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a writer thread did not stop"

    @property
    def acked_keys(self) -> list[str]:
        return [k for per in self.acked for k in per]


def fetch_all(addr: tuple[str, int], keys: list[str]) -> dict[str, tuple[int, bytes]]:
    """Multi-get ``keys`` in batches; returns key -> (flags, value) for hits."""
    found: dict[str, tuple[int, bytes]] = {}
    with Conn(*addr, timeout=30) as conn:
        for i in range(0, len(keys), 100):
            batch = keys[i:i + 100]
            conn.send("get " + " ".join(batch) + "\r\n")
            for k, flags, data, _cas in conn.read_values():
                found[k] = (flags, data)
    return found


def check_acked(addr: tuple[str, int], acked: list[str], maybe: list[str]) -> None:
    found = fetch_all(addr, acked + maybe)
    missing = [k for k in acked if k not in found]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    wrong = [k for k in acked + maybe if k in found and found[k][1] != value_for(k)]
    assert not wrong, f"{len(wrong)} keys with a wrong value, e.g. {wrong[:5]}"
    bad_flags = [k for k in acked if found[k][0] != int(k.rsplit("_", 1)[1]) % 65536]
    assert not bad_flags, f"wrong flags on {bad_flags[:5]}"


def run_load_then(srv, tag: str, kill) -> tuple[list[str], list[str]]:
    load = WriteLoad(srv.addr, tag).start()
    time.sleep(LOAD_SECONDS)
    kill()
    load.join()
    assert not load.errors, load.errors[:5]
    acked = load.acked_keys
    assert len(acked) >= 50, f"only {len(acked)} writes acknowledged in {LOAD_SECONDS}s"
    maybe = [k for k in load.in_flight if k is not None]
    return acked, maybe


def test_kill9_under_load_loses_no_acknowledged_write(murakumo_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = murakumo_factory(data_dir=data_dir, sync="always")
    all_acked: list[str] = []
    for rnd in range(3):
        acked, maybe = run_load_then(srv, f"k9r{rnd}", srv.kill9)
        assert not srv.alive()
        all_acked += acked
        srv.start()
        check_acked(srv.addr, all_acked, maybe)
    srv.terminate()


def test_sigterm_under_load_loses_no_acknowledged_write(murakumo_factory, tmp_path):
    srv = murakumo_factory(data_dir=tmp_path / "data", sync="always")
    codes = []
    acked, maybe = run_load_then(srv, "term", lambda: codes.append(srv.terminate(timeout=30)))
    assert codes == [0], f"exit code after SIGTERM: {codes}\n{srv.log_tail()}"
    srv.start()
    check_acked(srv.addr, acked, maybe)
    srv.terminate()


def test_kill9_with_default_sync_loses_no_acknowledged_write(murakumo_factory, tmp_path):
    # DESIGN.md section 6: even the default policy hands every acknowledged write
    # to the OS first, so a process crash (not a power cut) loses nothing.
    srv = murakumo_factory(data_dir=tmp_path / "data")
    acked, maybe = run_load_then(srv, "dflt", srv.kill9)
    srv.start()
    check_acked(srv.addr, acked, maybe)
    srv.terminate()


def test_plain_restart_serves_the_same_data(murakumo_factory, tmp_path):
    srv = murakumo_factory(data_dir=tmp_path / "data")
    with Conn(*srv.addr) as c:
        assert c.set("keep", b"\x00binary\r\nvalue", flags=4242) == b"STORED"
        assert c.set("ttl", "expires later", exptime=600) == b"STORED"
        assert c.set("gone", "deleted") == b"STORED"
        assert c.cmd("delete gone") == b"DELETED"
        assert c.set("short", "expires soon", exptime=1) == b"STORED"
        assert c.set("counter", "41") == b"STORED"
        assert c.cmd("incr counter 1") == b"42"
        assert c.store("append", "keep", "+tail") == b"STORED"
        _d, _f, cas_before = c.gets("keep")
    assert srv.terminate() == 0, srv.log_tail()
    time.sleep(1.5)
    srv.start()
    with Conn(*srv.addr) as c:
        c.send("gets keep\r\n")
        [(k, flags, data, cas)] = c.read_values()
        assert (k, flags, data) == ("keep", 4242, b"\x00binary\r\nvalue+tail")
        assert cas == cas_before, "CAS must survive a restart"
        assert c.get("ttl") == b"expires later"
        c.send("mg ttl t\r\n")
        ttl = int(c.readline().decode().split(" t", 1)[1])
        assert 500 < ttl <= 600, f"expiry not kept across restart: ttl {ttl}"
        assert c.get("gone") is None, "a delete was undone by the restart"
        assert c.get("short") is None, "an item expired while down came back"
        assert c.get("counter") == b"42"
        # the restarted server keeps issuing fresh CAS values
        assert c.set("keep", "new") == b"STORED"
        _d, _f, cas_after = c.gets("keep")
        assert cas_after != cas_before
    srv.terminate()


def test_repeated_restarts_change_nothing(murakumo_factory, tmp_path):
    srv = murakumo_factory(data_dir=tmp_path / "data")
    keys = [f"stable_{i}" for i in range(500)]
    with Conn(*srv.addr) as c:
        c.send(b"".join(f"set {k} {i} 0 {len(value_for(k))} noreply\r\n".encode()
                        + value_for(k) + b"\r\n" for i, k in enumerate(keys)))
        assert c.cmd("mn") == b"MN"
    for _ in range(2):
        assert srv.terminate() == 0, srv.log_tail()
        srv.start()
        found = fetch_all(srv.addr, keys)
        bad = [k for i, k in enumerate(keys) if found.get(k) != (i, value_for(k))]
        assert not bad, f"{len(bad)} of {len(keys)} keys lost or changed, e.g. {bad[:5]}"
    srv.terminate()
