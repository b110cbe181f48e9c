"""Operators' tools: memcached-tool (from Debian's memcached package) and the commands it
and monitoring scripts rely on: `lru_crawler metadump` (listing every key),
`lru_crawler crawl` (reclaiming expired items now), the crawler's switches and knobs
(`enable`, `disable`, `sleep`, `tocrawl`), `stats slabs` and `stats sizes`; and murakumo's
own `stats engine`.

Each test starts its own server, so the key listings hold exactly what the test stored.
Expected replies are memcached 1.6.18's, checked by running this file with
``--target memcached``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.parse

import pytest

from mcwire import Conn, meta, random_bytes

MEMCACHED_TOOL = shutil.which("memcached-tool") or "/usr/share/memcached/scripts/memcached-tool"
ENTRY = re.compile(rb"^key=(\S+) exp=(-?\d+) la=(\d+) cas=(\d+) fetch=(yes|no) cls=(\d+) size=(\d+)$")


def run_tool(addr: tuple[str, int], mode: str) -> bytes:
    """memcached-tool's output; a hang (a reply without END) fails after the timeout."""
    done = subprocess.run(["perl", MEMCACHED_TOOL, f"{addr[0]}:{addr[1]}", mode],
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def load(conn: Conn, items: dict[str, tuple[bytes, int, int]]) -> None:
    """Stores key -> (value, flags, exptime), pipelined, and checks every reply."""
    for start in range(0, len(items), 500):
        batch = list(items.items())[start:start + 500]
        wire = b"".join(f"set {k} {f} {e} {len(v)}\r\n".encode() + v + b"\r\n"
                        for k, (v, f, e) in batch)
        conn.send(wire)
        for _ in batch:
            assert conn.readline() == b"STORED"


def metadump(conn: Conn, target: str = "all") -> list[tuple[bytes, ...]]:
    conn.send(f"lru_crawler metadump {target}\r\n")
    return metadump_reply(conn)


def metadump_reply(conn: Conn) -> list[tuple[bytes, ...]]:
    """The entries of a metadump reply, up to its END."""
    entries = []
    while True:
        line = conn.readline(bare_lf=True)
        if line == b"END":
            return entries
        found = ENTRY.match(line)
        assert found, f"not a metadump line: {line!r}"
        entries.append(found.groups())


@pytest.fixture(scope="module", autouse=True)
def tool_present():
    if not os.access(MEMCACHED_TOOL, os.R_OK):
        pytest.fail(f"{MEMCACHED_TOOL} not found: scripts/test installs Debian's memcached")


def test_keys_lists_every_item_with_its_expiry(server_factory):
    srv = server_factory()
    with Conn(*srv.addr) as c:
        now = int(c.stats()["time"])
        items = {f"tool:{i}": (b"v", i, 1000 if i % 3 == 0 else 0) for i in range(300)}
        items["odd/%+~\u00e9"] = (b"v", 7, 0)
        load(c, items)
        c.send("get tool:5\r\n")
        c.read_values()
    out = run_tool(srv.addr, "keys")
    listed = {}
    for line in out.splitlines():
        found = ENTRY.match(line)
        assert found, f"not a key line: {line!r}"
        key = urllib.parse.unquote_to_bytes(found.group(1)).decode()
        assert key not in listed, f"{key} listed twice"
        listed[key] = found.groups()
    assert set(listed) == set(items)
    for key, (_, _, exptime) in items.items():
        exp = int(listed[key][1])
        if exptime:
            assert now + exptime - 5 <= exp <= now + exptime + 5, (key, exp)
        else:
            assert exp == -1, (key, exp)
        assert listed[key][5] == b"1"
    # A read is what marks an item fetched.
    assert listed["tool:5"][4] == b"yes"
    assert listed["tool:6"][4] == b"no"


def test_dump_restores_into_a_fresh_server(server_factory):
    source, target = server_factory(), server_factory()
    items = {f"dump:{i}": (random_bytes(i * 37 % 3000, seed=i), i * 7, 3600 if i % 4 == 0 else 0)
             for i in range(200)}
    with Conn(*source.addr) as c:
        now = int(c.stats()["time"])
        load(c, items)
    dump = run_tool(source.addr, "dump")
    assert dump.count(b"add ") >= len(items)
    with Conn(*target.addr) as c:
        c.send(dump)
        for _ in items:
            assert c.readline() == b"STORED"
        for key, (value, flags, exptime) in items.items():
            c.send(f"get {key}\r\n")
            assert c.read_values() == [(key, flags, value, None)], key
            ttl = int(meta(c, f"mg {key} t").flag("t"))
            if exptime:
                # The dump carries the absolute expiry, so the copy lapses when the
                # original would have.
                assert exptime - 10 <= ttl <= exptime + 1 + (int(time.time()) - now), (key, ttl)
            else:
                assert ttl == -1, (key, ttl)


def test_a_large_metadump_reaches_a_slow_reader_without_blocking_others(server_factory):
    srv = server_factory()
    count = 20_000
    pad = "k" * 180
    with Conn(*srv.addr) as c:
        load(c, {f"{pad}:{i}": (b"x", 0, 0) for i in range(count)})
    slow = Conn(*srv.addr, timeout=30)
    try:
        slow.send("lru_crawler metadump all\r\n")
        # The reply (about 5 MB) waits in the socket while another client is served.
        time.sleep(1)
        with Conn(*srv.addr) as other:
            assert other.set("during", "dump") == b"STORED"
            assert other.get("during") == b"dump"
        entries = metadump_reply(slow)
    finally:
        slow.close()
    keys = {urllib.parse.unquote_to_bytes(e[0]) for e in entries}
    expected = {f"{pad}:{i}".encode() for i in range(count)}
    assert expected <= keys
    assert len(entries) == len(keys), "no item listed twice"


def test_crawl_reclaims_expired_items_now(server_factory, target):
    srv = server_factory()
    with Conn(*srv.addr) as c:
        load(c, {f"short:{i}": (b"v", 0, 1) for i in range(50)})
        load(c, {f"long:{i}": (b"v", 0, 0) for i in range(5)})
        assert int(c.stats()["curr_items"]) == 55
        before = c.stats()
        time.sleep(2.5)
        # Expired items are invisible at once but still counted until something reclaims
        # them; the periodic sweep would take far longer than this test waits.
        assert c.cmd("lru_crawler crawl all") == b"OK"
        deadline = time.monotonic() + 15
        while int(c.stats()["curr_items"]) != 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert int(c.stats()["curr_items"]) == 5
        assert len(metadump(c)) == 5
        if target == "murakumo":
            # memcached's LRU maintainer may reclaim them first, and its crawler counts
            # only what it frees itself.
            after = c.stats()
            assert int(after["crawler_reclaimed"]) - int(before["crawler_reclaimed"]) == 50
            checked = int(after["crawler_items_checked"]) - int(before["crawler_items_checked"])
            assert checked >= 55


def test_crawler_arguments_are_checked_like_memcached(conn):
    for line in ["lru_crawler metadump 0", "lru_crawler metadump 64",
                 "lru_crawler metadump 1,x", "lru_crawler crawl 0", "lru_crawler crawl 64"]:
        assert conn.cmd(line) == b"BADCLASS invalid class id", line
    for line in ["lru_crawler", "lru_crawler bogus", "lru_crawler metadump",
                 "lru_crawler metadump all extra"]:
        assert conn.cmd(line) == b"ERROR", line
    # Still in step.
    assert conn.cmd("version").startswith(b"VERSION ")


def test_crawler_switches_and_knobs_answer_as_memcached(server_factory):
    with Conn(*server_factory().addr) as c:
        # It runs from the start, and starting it again is refused.
        assert c.stats("settings")["lru_crawler"] == "yes"
        assert c.cmd("lru_crawler enable") == b"ERROR failed to start lru crawler thread"
        assert c.cmd("lru_crawler disable") == b"OK"
        assert c.cmd("lru_crawler disable") == b"OK"
        assert c.stats("settings")["lru_crawler"] == "no"
        assert c.cmd("lru_crawler crawl all") == b"CLIENT_ERROR lru crawler disabled"
        assert c.cmd("lru_crawler metadump all") == b"CLIENT_ERROR lru crawler disabled"
        assert c.cmd("lru_crawler enable") == b"OK"
        assert c.stats("settings")["lru_crawler"] == "yes"
        assert c.cmd("lru_crawler crawl all") == b"OK"

        assert c.cmd("lru_crawler sleep 250") == b"OK"
        assert c.cmd("lru_crawler tocrawl 7") == b"OK"
        settings = c.stats("settings")
        assert (settings["lru_crawler_sleep"], settings["lru_crawler_tocrawl"]) == ("250", "7")
        assert c.cmd("lru_crawler sleep 1000000") == b"OK"
        assert (c.cmd("lru_crawler sleep 1000001")
                == b"CLIENT_ERROR sleep must be one second or less")
        for line in ["lru_crawler sleep abc", "lru_crawler sleep -1", "lru_crawler tocrawl x",
                     "lru_crawler tocrawl -5"]:
            assert c.cmd(line) == b"CLIENT_ERROR bad command line format", line
        for line in ["lru_crawler enable now", "lru_crawler sleep", "lru_crawler tocrawl 1 2"]:
            assert c.cmd(line) == b"ERROR", line
        assert c.cmd("version").startswith(b"VERSION ")


def test_slab_and_size_stats_are_well_formed(server_factory):
    srv = server_factory()
    with Conn(*srv.addr) as c:
        load(c, {f"slab:{i}": (b"value", 0, 0) for i in range(10)})
        c.send("get slab:1\r\n")
        c.read_values()
        slabs = c.stats("slabs")
        assert int(slabs["active_slabs"]) >= 1
        assert int(slabs["total_malloced"]) >= 0
        per_class = {k: v for k, v in slabs.items() if re.match(r"^\d+:\w+$", k)}
        assert all(v.isdigit() for v in per_class.values()), per_class
        assert sum(int(v) for k, v in per_class.items() if k.endswith(":get_hits")) == 1
        assert sum(int(v) for k, v in per_class.items() if k.endswith(":cmd_set")) == 10
        assert c.stats("sizes") == {"sizes_status": "disabled"}


ENGINE_FIELDS = {
    "engine_write_buffer_bytes", "engine_write_buffer_limit", "engine_sealed_memtables",
    "engine_flushes_pending", "engine_compactions_running", "engine_compactions_done",
    "engine_compaction_us", "engine_journal_files", "engine_tables", "engine_level0_tables",
    "engine_blob_files", "engine_block_cache_bytes", "engine_block_cache_limit",
    "engine_disk_bytes",
}


def test_engine_stats_follow_writes_and_flushes(murakumo_factory):
    """`stats engine` shows the write buffer filling and flushes turning it into tables:
    what an operator watches to see whether the disk keeps up with the writes."""
    # 8 MiB: a 4 MiB memtable, so 12 MiB of sets flush several times.
    srv = murakumo_factory(cache_mb=8)
    with Conn(*srv.addr) as c:
        fresh = c.stats("engine")
        assert set(fresh) == ENGINE_FIELDS, fresh
        assert all(v.isdigit() for v in fresh.values()), fresh
        assert fresh["engine_tables"] == "0"
        assert int(fresh["engine_write_buffer_limit"]) == 8 * 1024 * 1024
        value = b"v" * 4000
        load(c, {"engine:first": (value, 0, 0)})
        assert int(c.stats("engine")["engine_write_buffer_bytes"]) >= len(value)
        assert int(c.stats("engine")["engine_journal_files"]) >= 1
        load(c, {f"engine:{i}": (value, 0, 0) for i in range(3000)})
        deadline = time.monotonic() + 30
        while int(c.stats("engine")["engine_tables"]) == 0:
            assert time.monotonic() < deadline, c.stats("engine")
            time.sleep(0.05)
        after = c.stats("engine")
        assert int(after["engine_write_buffer_bytes"]) <= int(after["engine_write_buffer_limit"])
        assert int(after["engine_disk_bytes"]) > 0, after


def test_memcached_tool_reports_complete(server_factory):
    srv = server_factory()
    with Conn(*srv.addr) as c:
        load(c, {f"report:{i}": (b"value", 0, 0) for i in range(10)})
    assert b"Item_Size" in run_tool(srv.addr, "display")
    assert re.search(rb"curr_items\s+10\b", run_tool(srv.addr, "stats"))
    assert re.search(rb"maxconns\s+\d+", run_tool(srv.addr, "settings"))
    assert b"sizes_status" in run_tool(srv.addr, "sizes")


def test_stats_conns_lists_each_client_and_what_it_waits_for(server_factory):
    srv = server_factory()
    host, port = srv.addr
    idle, used, half, data = (Conn(*srv.addr) for _ in range(4))
    try:
        assert used.cmd("version").startswith(b"VERSION ")
        half.send("get fo")
        data.send("set k 0 0 100\r\nabc")
        time.sleep(1.5)
        with Conn(*srv.addr) as asker:
            entries: dict[str, dict[str, str]] = {}
            for name, value in asker.stats("conns").items():
                fd, field = name.split(":", 1)
                entries.setdefault(fd, {})[field] = value
            by_addr = {e["addr"]: e for e in entries.values()}
            listening = [e for e in entries.values() if e["state"] == "conn_listening"]
            assert [e["addr"] for e in listening] == [f"tcp:{host}:{port}"]

            def entry(conn: Conn) -> dict[str, str]:
                client = conn.sock.getsockname()
                found = by_addr[f"tcp:{client[0]}:{client[1]}"]
                assert found["listen_addr"] == f"tcp:{host}:{port}"
                return found

            assert entry(idle)["state"] == "conn_new_cmd"
            assert entry(used)["state"] == "conn_read"
            assert entry(half)["state"] == "conn_read"
            assert entry(data)["state"] == "conn_nread"
            assert entry(asker)["state"] == "conn_parse_cmd"
            assert int(entry(used)["secs_since_last_cmd"]) >= 1
            assert int(entry(asker)["secs_since_last_cmd"]) == 0
            assert len(entries) == 6

            gone = idle.sock.getsockname()
            idle.close()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                addrs = {v for k, v in asker.stats("conns").items() if k.endswith(":addr")}
                if f"tcp:{gone[0]}:{gone[1]}" not in addrs:
                    break
                time.sleep(0.1)
            assert f"tcp:{gone[0]}:{gone[1]}" not in addrs, "a closed connection stays listed"
    finally:
        for c in (idle, used, half, data):
            c.close()


def test_cachedump_lists_items_in_memcached_form(server_factory, target):
    srv = server_factory()
    items = {f"cd:{i}": (b"v" * (i + 1), 0, 500 if i % 2 else 0) for i in range(5)}
    with Conn(*srv.addr) as c:
        now = int(c.stats()["time"])
        load(c, items)

        def dump(args: str) -> dict[str, tuple[int, int]]:
            c.send(f"stats cachedump {args}\r\n")
            listed = {}
            while (line := c.readline()) != b"END":
                found = re.match(rb"^ITEM (\S+) \[(\d+) b; (\d+) s\]$", line)
                assert found, f"not a cachedump line: {line!r}"
                listed[found.group(1).decode()] = (int(found.group(2)), int(found.group(3)))
            return listed

        # memcached lists one segment of the class's LRU, which its maintainer thread
        # fills a moment after the stores; we list every item at once.
        deadline = time.monotonic() + 10
        while not (listed := dump("1 0")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert listed and set(listed) <= set(items)
        if target == "murakumo":
            assert set(listed) == set(items)
        for key, (size, exp) in listed.items():
            value, _, exptime = items[key]
            assert size == len(value)
            assert (now + exptime - 5 <= exp <= now + exptime + 5) if exptime else exp == 0
        assert len(dump("1 1")) == 1
        assert dump("2 0") == {}
        assert c.cmd("stats cachedump 99 0") == b"CLIENT_ERROR Illegal slab id"
        assert c.cmd("stats cachedump 1") == b"CLIENT_ERROR bad command line"
        assert c.cmd("version").startswith(b"VERSION ")


def test_the_node_runs_without_transparent_huge_pages(murakumo_factory):
    """Huge pages zeroed inside requests made tails and RSS worse (see `dev.rs`)."""
    srv = murakumo_factory()
    with open(f"/proc/{srv.proc.pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status if ":" in line)
    if "THP_enabled" not in fields:
        pytest.skip("this kernel does not report THP_enabled")
    assert fields["THP_enabled"].strip() == "0"
