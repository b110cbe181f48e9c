"""Memory storage: what an operator of memcached expects of ``-m``.

``murakumo dev --storage memory -m N`` keeps items in memory only, as memcached
does: within the limit, the least recently used items are evicted to make room,
``evictions`` counts them, and a restart starts empty. Each test starts its own
server (memcached with the same ``-m`` under ``--target memcached``), so the
suite checks memcached's behaviour, not our reading of it.
"""

from __future__ import annotations

import subprocess

import pytest

from mcwire import Conn, rss_kib

LIMIT_MB = 8
VALUE_LEN = 200


def value_of(key: str) -> bytes:
    """A value that says which key it belongs to, so a mixed-up item shows."""
    return (key.encode() * (VALUE_LEN // len(key) + 1))[:VALUE_LEN]


def set_many(conn: Conn, keys: list[str], batch: int = 500) -> None:
    """Pipelined sets, every one of which must be stored."""
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        conn.send(b"".join(
            f"set {key} 0 0 {VALUE_LEN}\r\n".encode() + value_of(key) + b"\r\n"
            for key in chunk))
        for key in chunk:
            assert conn.readline() == b"STORED", key


def held(conn: Conn, keys: list[str], batch: int = 100) -> list[str]:
    """Which of `keys` the server still holds, checking each value it returns."""
    found = []
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        conn.send(f"get {' '.join(chunk)}\r\n")
        for key, _flags, data, _cas in conn.read_values():
            assert data == value_of(key), f"{key} came back with another value"
            found.append(key)
    return found


@pytest.fixture
def memory_server(server_factory):
    return server_factory(storage="memory", cache_mb=LIMIT_MB)


def test_writing_past_the_limit_evicts_and_counts(memory_server, target):
    conn = Conn(*memory_server.addr)
    assert int(conn.stats()["limit_maxbytes"]) == LIMIT_MB * 1024 * 1024
    rss_before = rss_kib(memory_server.pid)
    # About 30 MB of items into 8 MiB.
    keys = [f"item:{i:06d}" for i in range(100_000)]
    set_many(conn, keys)
    stats = conn.stats()
    items, evictions = int(stats["curr_items"]), int(stats["evictions"])
    assert evictions > 0
    assert items + evictions == len(keys), stats
    # Roughly what fits: at 200-300 bytes an item, 8 MiB is 25,000-40,000 items.
    assert 15_000 < items < 50_000, stats
    # Every item counted is there with its own value; every other one is gone.
    assert len(held(conn, keys)) == items
    if target == "murakumo":
        grown_mib = (rss_kib(memory_server.pid) - rss_before) / 1024
        assert grown_mib < 3 * LIMIT_MB, f"grew by {grown_mib:.0f} MiB"


def test_items_in_use_outlive_a_flood(memory_server):
    conn = Conn(*memory_server.addr)
    hot = [f"hot:{i:04d}" for i in range(500)]
    set_many(conn, hot)
    # Four limits' worth of new items, while the hot keys keep being read.
    flood = [f"flood:{i:06d}" for i in range(120_000)]
    for start in range(0, len(flood), 2_000):
        set_many(conn, flood[start:start + 2_000])
        assert len(held(conn, hot)) == len(hot), f"hot keys evicted after {start} sets"
    assert int(conn.stats()["evictions"]) > 0
    # The oldest of the flood, which nobody read, went first.
    assert len(held(conn, flood[:10_000])) < 1_000


def test_replacing_and_deleting_frees_room(memory_server):
    conn = Conn(*memory_server.addr)
    keys = [f"k:{i:05d}" for i in range(5_000)]
    # Rewriting 5,000 keys (about 1.5 MB) ten times needs no eviction.
    for _ in range(10):
        set_many(conn, keys)
    for key in keys[::2]:
        assert conn.cmd(f"delete {key}") == b"DELETED"
    stats = conn.stats()
    assert int(stats["evictions"]) == 0
    assert int(stats["curr_items"]) == 2_500
    assert held(conn, keys) == keys[1::2]


def test_settings_say_evictions_are_on(memory_server):
    settings = Conn(*memory_server.addr).stats("settings")
    assert settings["evictions"] == "on"
    assert int(settings["maxbytes"]) == LIMIT_MB * 1024 * 1024


def test_a_restart_starts_empty(memory_server):
    conn = Conn(*memory_server.addr)
    assert conn.set("survivor", "v") == b"STORED"
    conn.close()
    assert memory_server.terminate() == 0
    memory_server.start()
    conn = Conn(*memory_server.addr)
    assert conn.get("survivor") is None
    assert int(conn.stats()["curr_items"]) == 0


def test_a_limit_below_twice_the_item_size_is_refused(target, murakumo_bin, request,
                                                     tmp_path):
    # memcached: "Cannot set item size limit higher than 1/2 of memory max."
    if target == "murakumo":
        argv = [murakumo_bin, "dev", "--storage", "memory", "--cache-mb", "1",
                "--max-item-size", "1m", "--data-dir", str(tmp_path / "data"),
                "--listen", "127.0.0.1:0"]
    else:
        argv = [request.config.getoption("--memcached-bin"), "-m", "1", "-I", "1m",
                "-l", "127.0.0.1", "-p", "0", "-U", "0", "-u", "nobody"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "item size" in (done.stdout + done.stderr).lower()


def test_cache_memlimit_applies_at_once(server_factory):
    srv = server_factory(storage="memory", cache_mb=64)
    conn = Conn(*srv.addr)
    assert conn.cmd(f"cache_memlimit {LIMIT_MB}") == b"OK"
    assert int(conn.stats()["limit_maxbytes"]) == LIMIT_MB * 1024 * 1024
    assert int(conn.stats("settings")["maxbytes"]) == LIMIT_MB * 1024 * 1024
    # The same 30 MB as above now fits only as well as into -m 8.
    keys = [f"item:{i:06d}" for i in range(100_000)]
    set_many(conn, keys)
    stats = conn.stats()
    assert int(stats["evictions"]) > 0
    assert 15_000 < int(stats["curr_items"]) < 50_000, stats
