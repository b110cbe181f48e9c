"""Text-protocol edge cases that memcapable does not cover.

Expected replies are memcached 1.6.18's, checked by running this file with
``--target memcached``.
"""

from __future__ import annotations

import re
import signal
import time

import pytest

import struct

from mcwire import Conn, OP_SET, bin_request, meta, read_bin, unique


@pytest.fixture
def key() -> str:
    return unique("text")


def ttl_of(conn: Conn, key: str) -> int:
    return int(meta(conn, f"mg {key} t").flag("t"))


# -- retrieval -------------------------------------------------------------------


def test_multi_get_answers_in_request_order(conn, key):
    keys = [f"{key}_{i}" for i in range(20)]
    for i, k in enumerate(keys):
        assert conn.set(k, f"v{i}", flags=i) == b"STORED"
    wanted = keys[::-1] + [f"{key}_absent"] + keys[:3] + [keys[5]]
    conn.send("get " + " ".join(wanted) + "\r\n")
    got = conn.read_values()
    expected = [(k, int(k.rsplit("_", 1)[1]), f"v{k.rsplit('_', 1)[1]}".encode(), None)
                for k in wanted if not k.endswith("_absent")]
    assert got == expected


def test_gets_cas_changes_with_every_write(conn, key):
    conn.set(f"{key}_a", "1")
    conn.set(f"{key}_b", "2")
    conn.send(f"gets {key}_a {key}_b\r\n")
    items = conn.read_values()
    assert [(i[0], i[2]) for i in items] == [(f"{key}_a", b"1"), (f"{key}_b", b"2")]
    assert all(i[3] is not None for i in items)
    # every write to a key gives it a new CAS, including delete then re-add, so a
    # stale CAS can never match a newer item with the same key (no ABA)
    seen = {items[0][3]}
    for value in ("x", "y"):
        conn.set(f"{key}_a", value)
        seen.add(conn.gets(f"{key}_a")[2])
    assert conn.cmd(f"delete {key}_a") == b"DELETED"
    conn.store("add", f"{key}_a", "z")
    seen.add(conn.gets(f"{key}_a")[2])
    assert len(seen) == 4, seen


def test_get_without_key_is_error(conn):
    assert conn.cmd("get") == b"ERROR"
    assert conn.cmd("gets") == b"ERROR"


def test_gat_updates_ttl_and_returns_value(conn, key):
    assert conn.set(key, "hello", flags=9, exptime=100) == b"STORED"
    conn.send(f"gat 1000 {key} {key}_absent\r\n")
    assert conn.read_values() == [(key, 9, b"hello", None)]
    assert 998 <= ttl_of(conn, key) <= 1000


def test_gats_returns_cas(conn, key):
    conn.set(key, "hello", exptime=100)
    _data, _flags, cas = conn.gets(key)
    conn.send(f"gats 0 {key}\r\n")
    assert conn.read_values() == [(key, 0, b"hello", cas)]
    assert ttl_of(conn, key) == -1


def test_gat_with_negative_exptime_expires(conn, key):
    conn.set(key, "x")
    conn.send(f"gat -1 {key}\r\n")
    assert conn.read_values() == [(key, 0, b"x", None)]
    assert conn.get(key) is None


def test_touch(conn, key):
    assert conn.cmd(f"touch {key} 10") == b"NOT_FOUND"
    conn.set(key, "x", exptime=100)
    assert conn.cmd(f"touch {key} 500") == b"TOUCHED"
    assert 498 <= ttl_of(conn, key) <= 500


# -- storage ----------------------------------------------------------------------


def test_add_replace(conn, key):
    assert conn.store("replace", key, "r") == b"NOT_STORED"
    assert conn.store("add", key, "a") == b"STORED"
    assert conn.store("add", key, "b") == b"NOT_STORED"
    assert conn.get(key) == b"a"
    assert conn.store("replace", key, "c") == b"STORED"
    assert conn.get(key) == b"c"


def test_cas(conn, key):
    assert conn.store("cas", key, "x", extra="1") == b"NOT_FOUND"
    conn.set(key, "one")
    _d, _f, cas = conn.gets(key)
    assert conn.store("cas", key, "two", extra=str(cas + 1)) == b"EXISTS"
    assert conn.get(key) == b"one"
    assert conn.store("cas", key, "two", flags=3, extra=str(cas)) == b"STORED"
    data, flags, cas2 = conn.gets(key)
    assert (data, flags) == (b"two", 3)
    assert cas2 != cas
    # the old cas is spent
    assert conn.store("cas", key, "three", extra=str(cas)) == b"EXISTS"


def test_append_prepend_keep_flags_and_exptime(conn, key):
    assert conn.store("append", key, "x") == b"NOT_STORED"
    assert conn.store("prepend", key, "x") == b"NOT_STORED"
    conn.set(key, "mid", flags=1234, exptime=300)
    assert conn.store("append", key, "_end", flags=1, exptime=5) == b"STORED"
    assert conn.store("prepend", key, "start_", flags=2, exptime=5) == b"STORED"
    conn.send(f"get {key}\r\n")
    assert conn.read_values() == [(key, 1234, b"start_mid_end", None)]
    assert 290 <= ttl_of(conn, key) <= 300


def test_binary_safe_values(conn, key):
    value = bytes(range(256)) * 4 + b"\r\nEND\r\n"
    assert conn.set(key, value) == b"STORED"
    assert conn.get(key) == value
    assert conn.set(key, b"") == b"STORED"
    assert conn.get(key) == b""


def test_flags_full_32_bits(conn, key):
    assert conn.set(key, "x", flags=4294967295) == b"STORED"
    conn.send(f"get {key}\r\n")
    assert conn.read_values() == [(key, 4294967295, b"x", None)]


def test_delete(conn, key):
    assert conn.cmd(f"delete {key}") == b"NOT_FOUND"
    conn.set(key, "x")
    assert conn.cmd(f"delete {key}") == b"DELETED"
    assert conn.get(key) is None


# -- incr / decr ------------------------------------------------------------------


def test_incr_decr_basic(conn, key):
    assert conn.cmd(f"incr {key} 1") == b"NOT_FOUND"
    assert conn.cmd(f"decr {key} 1") == b"NOT_FOUND"
    conn.set(key, "10", flags=77)
    assert conn.cmd(f"incr {key} 5") == b"15"
    assert conn.cmd(f"decr {key} 3") == b"12"
    conn.send(f"get {key}\r\n")
    assert conn.read_values() == [(key, 77, b"12", None)], "incr keeps the flags"


def test_incr_wraps_at_2_pow_64(conn, key):
    conn.set(key, "18446744073709551615")
    assert conn.cmd(f"incr {key} 1") == b"0"
    conn.set(key, "18446744073709551610")
    assert conn.cmd(f"incr {key} 10") == b"4"
    conn.set(key, "12")
    assert conn.cmd(f"incr {key} 18446744073709551615") == b"11"


def test_decr_floors_at_zero(conn, key):
    conn.set(key, "5")
    assert conn.cmd(f"decr {key} 6") == b"0"
    assert conn.cmd(f"decr {key} 18446744073709551615") == b"0"
    assert conn.get(key).rstrip(b" ") == b"0"


def test_incr_grows_and_decr_shrinks_length(conn, key):
    conn.set(key, "99")
    assert conn.cmd(f"incr {key} 1") == b"100"
    assert conn.get(key) == b"100"
    assert conn.cmd(f"decr {key} 1") == b"99"
    # protocol.txt: a shrinking number MAY be space padded (memcached pads)
    value = conn.get(key)
    assert value in (b"99", b"99 "), value
    assert conn.cmd(f"incr {key} 1000") == b"1099"
    assert conn.get(key) == b"1099"


def test_incr_with_leading_space(conn, key):
    conn.set(key, " 12")
    assert conn.cmd(f"incr {key} 1") == b"13"
    assert conn.get(key).rstrip(b" ") == b"13"


@pytest.mark.parametrize("value", ["12a", "abc", "18446744073709551616", "-1", ""])
def test_incr_non_numeric_value(conn, key, value):
    conn.set(key, value)
    assert conn.cmd(f"incr {key} 1") == b"CLIENT_ERROR cannot increment or decrement non-numeric value"
    assert conn.cmd(f"decr {key} 1") == b"CLIENT_ERROR cannot increment or decrement non-numeric value"
    assert conn.get(key) == value.encode()


@pytest.mark.parametrize("delta", ["abc", "-1", "18446744073709551616", "1.5"])
def test_incr_invalid_delta(conn, key, delta):
    conn.set(key, "12")
    assert conn.cmd(f"incr {key} {delta}") == b"CLIENT_ERROR invalid numeric delta argument"
    assert conn.cmd(f"decr {key} {delta}") == b"CLIENT_ERROR invalid numeric delta argument"
    assert conn.get(key) == b"12"


# -- expiry -------------------------------------------------------------------------


def test_negative_exptime_is_already_expired(conn, key):
    assert conn.set(key, "x", exptime=-1) == b"STORED"
    assert conn.get(key) is None


def test_relative_exptime_expires(conn, key):
    conn.set(key, "x", exptime=1)
    conn.set(f"{key}_long", "y", exptime=100)
    deadline = time.monotonic() + 4
    while conn.get(key) is not None:
        assert time.monotonic() < deadline, "item with exptime 1 still served after 4 s"
        time.sleep(0.2)
    assert conn.get(f"{key}_long") == b"y"


def test_absolute_exptime(conn, key):
    now = int(conn.stats()["time"])
    conn.set(key, "future", exptime=now + 200)
    assert conn.get(key) == b"future"
    assert 195 <= ttl_of(conn, key) <= 200
    conn.set(f"{key}_past", "past", exptime=now - 10)
    assert conn.get(f"{key}_past") is None


def test_exptime_just_over_30_days_is_absolute(conn, key):
    # 30 days + 1 s is read as a Unix time in 1970: long expired
    conn.set(key, "x", exptime=60 * 60 * 24 * 30 + 1)
    assert conn.get(key) is None
    conn.set(key, "y", exptime=60 * 60 * 24 * 30)
    assert conn.get(key) == b"y"


def test_flush_all_with_delay(connect, key):
    conn = connect()
    conn.set(key, "before")
    assert conn.cmd("flush_all 2") == b"OK"
    assert conn.get(key) == b"before", "a delayed flush must not act at once"
    deadline = time.monotonic() + 5
    while conn.get(key) is not None:
        assert time.monotonic() < deadline, "delayed flush never took effect"
        time.sleep(0.2)
    time.sleep(1.1)
    conn.set(key, "after")
    assert conn.get(key) == b"after", "items stored after the flush time survive"


def test_flush_all_immediate_and_errors(conn, key):
    conn.set(key, "x")
    assert conn.cmd("flush_all") == b"OK"
    assert conn.get(key) is None
    assert conn.cmd("flush_all 0") == b"OK"
    assert conn.cmd("flush_all abc") == b"CLIENT_ERROR invalid exptime argument"
    conn.set(key, "y")
    assert conn.get(key) == b"y"


# -- noreply -------------------------------------------------------------------------


def test_noreply_on_every_command(conn, key):
    conn.set(f"{key}_cas", "c")
    _d, _f, cas = conn.gets(f"{key}_cas")
    lines = [
        f"set {key} 5 0 2 noreply\r\n10\r\n",
        f"add {key} 0 0 1 noreply\r\nx\r\n",          # NOT_STORED, silently
        f"add {key}_add 0 0 1 noreply\r\na\r\n",
        f"replace {key}_add 0 0 1 noreply\r\nb\r\n",
        f"append {key}_add 0 0 1 noreply\r\nc\r\n",
        f"prepend {key}_add 0 0 1 noreply\r\nd\r\n",
        f"cas {key}_cas 0 0 1 {cas} noreply\r\nC\r\n",
        f"incr {key} 5 noreply\r\n",
        f"decr {key} 2 noreply\r\n",
        f"touch {key} 100 noreply\r\n",
        f"set {key}_del 0 0 1 noreply\r\nz\r\n",
        f"delete {key}_del noreply\r\n",
        f"delete {key}_never noreply\r\n",            # NOT_FOUND, silently
        "verbosity 0 noreply\r\n",
    ]
    conn.send("".join(lines))
    assert conn.nothing_pending(0.3), "noreply commands must send nothing"
    conn.send(f"get {key} {key}_add {key}_cas {key}_del\r\n")
    assert conn.read_values() == [
        (key, 5, b"13", None),
        (f"{key}_add", 0, b"dbc", None),
        (f"{key}_cas", 0, b"C", None),
    ]
    assert 98 <= ttl_of(conn, key) <= 100


def test_flush_all_noreply(conn, key):
    conn.set(key, "x")
    conn.send("flush_all noreply\r\n")
    assert conn.nothing_pending(0.3)
    assert conn.get(key) is None


# -- misc commands --------------------------------------------------------------------


def test_version(conn):
    line = conn.cmd("version")
    assert re.fullmatch(rb"VERSION \S+", line), line


def test_verbosity(conn):
    assert conn.cmd("verbosity 1") == b"OK"
    assert conn.cmd("verbosity 0") == b"OK"
    assert conn.cmd("verbosity") == b"ERROR"
    assert conn.cmd("verbosity 0 1 2") == b"ERROR"
    conn.send("verbosity 0 noreply\r\n")
    assert conn.nothing_pending(0.2)


def test_quit_closes(connect):
    conn = connect()
    conn.send("quit\r\n")
    assert conn.expect_closed(5) == b""


def test_unknown_and_uppercase_commands(conn):
    assert conn.cmd("bogus") == b"ERROR"
    assert conn.cmd("GET foo") == b"ERROR", "command names are case-sensitive"


# -- stats ------------------------------------------------------------------------------

GENERAL_STATS = ["pid", "uptime", "time", "version", "curr_connections", "total_connections",
                 "cmd_get", "cmd_set", "get_hits", "get_misses", "curr_items", "total_items",
                 "bytes", "evictions"]


def test_stats_has_memcached_field_names(conn):
    stats = conn.stats()
    missing = [f for f in GENERAL_STATS if f not in stats]
    assert not missing, f"missing stats: {missing}"
    for field in GENERAL_STATS:
        if field != "version":
            assert stats[field].isdigit(), (field, stats[field])
    assert abs(int(stats["time"]) - time.time()) < 5
    assert conn.cmd("version") == f"VERSION {stats['version']}".encode()


def test_stats_counters_move(server_factory):
    srv = server_factory()
    with Conn(*srv.addr) as conn:
        before = conn.stats()
        assert int(before["pid"]) == srv.pid
        k = unique("stats")
        for i in range(5):
            assert conn.set(f"{k}_{i}", "12345") == b"STORED"
        for i in range(5):
            conn.get(f"{k}_{i}")
        for i in range(3):
            conn.get(f"{k}_absent_{i}")
        conn.send(f"get {k}_0 {k}_1 {k}_absent\r\n")
        conn.read_values()
        with Conn(*srv.addr) as other:
            # a reply proves the server has accepted the second connection
            assert other.cmd("version").startswith(b"VERSION ")
            mid = conn.stats()
            assert int(mid["curr_connections"]) >= 2
            assert int(mid["total_connections"]) >= int(before["total_connections"]) + 1
        after = conn.stats()

    def delta(name):
        return int(after[name]) - int(before[name])

    assert delta("cmd_set") == 5
    assert delta("curr_items") == 5
    assert delta("total_items") == 5
    assert delta("cmd_get") == 11
    assert delta("get_hits") == 7
    assert delta("get_misses") == 4
    assert delta("bytes") > 5 * 5
    assert int(after["evictions"]) == 0
    assert int(after["uptime"]) >= int(before["uptime"])


def test_stats_count_lapsed_reads_and_oversized_values(server_factory, target):
    srv = server_factory()
    with Conn(*srv.addr) as conn:
        k = unique("lapsed")
        # Otherwise the background sweep may reclaim the expired items before the reads
        # find them (a new node's first pass reads every partition).
        assert conn.cmd("lru_crawler disable") == b"OK"
        before = conn.stats()
        assert conn.set(f"{k}_expiring", "v", exptime=1) == b"STORED"
        assert conn.set(f"{k}_touched", "v", exptime=1) == b"STORED"
        time.sleep(2.2)
        assert conn.get(f"{k}_expiring") is None
        assert conn.cmd(f"touch {k}_touched 100") == b"NOT_FOUND"
        assert conn.get(f"{k}_never_set") is None
        assert conn.set(f"{k}_flushed", "v") == b"STORED"
        assert conn.cmd("flush_all") == b"OK"
        assert conn.get(f"{k}_flushed") is None
        oversized = b"x" * (1024 * 1024 + 1)
        assert conn.set(f"{k}_big", oversized) == b"SERVER_ERROR object too large for cache"
        conn.send(f"ms {k}_meta_big {len(oversized)}\r\n".encode() + oversized + b"\r\n")
        assert conn.readline() == b"SERVER_ERROR object too large for cache"
        assert conn.cmd("version").startswith(b"VERSION "), "the values were swallowed"
        after = conn.stats()

    def delta(name):
        return int(after[name]) - int(before[name])

    if target == "murakumo":
        # memcached's LRU maintainer reclaims expired items in the background whatever
        # the crawler does, so they may be gone before the reads look.
        assert delta("get_expired") == 2, "a get and a touch found expired items"
    assert delta("get_flushed") == 1
    assert delta("get_misses") == 3
    assert delta("store_too_large") == 2
    assert after["store_no_memory"] == "0"
    assert after["accepting_conns"] == "1"
    with Conn(*srv.addr) as conn:
        assert conn.cmd("stats reset") == b"RESET"
        reset = conn.stats()
    for name in ["get_expired", "get_flushed", "store_too_large", "total_items"]:
        assert reset[name] == "0", name


def test_stats_settings(server_factory):
    srv = server_factory(max_connections=77, idle_timeout=600, max_item_size=2 * 1024 * 1024)
    with Conn(*srv.addr) as conn:
        settings = conn.stats("settings")
        assert settings["maxconns"] == "77"
        assert settings["tcpport"] == str(srv.port)
        assert settings["item_size_max"] == str(2 * 1024 * 1024)
        # NOTE(1.6.18): the field is idle_timeout (protocol.txt says idle_time)
        assert settings["idle_timeout"] == "600"
        assert settings["cas_enabled"] == "yes"
        assert conn.cmd("verbosity 1") == b"OK"
        assert conn.stats("settings")["verbosity"] == "1"
        assert conn.cmd("verbosity 0") == b"OK"


def test_stats_items(conn, key):
    conn.set(key, "x" * 10)
    items = conn.stats("items")
    assert items, "stats items is empty with an item stored"
    for name, value in items.items():
        assert re.fullmatch(r"items:\d+:[a-z_]+", name), name
        assert re.fullmatch(r"-?\d+(\.\d+)?", value), (name, value)
    numbers = [int(v) for n, v in items.items() if n.endswith(":number")]
    assert numbers and sum(numbers) >= 1


def detail_dump(conn: Conn) -> dict[str, tuple[int, int, int, int]]:
    """``stats detail dump`` as {prefix: (get, hit, set, del)}; memcached lists the
    prefixes in hash order, murakumo in byte order."""
    conn.send("stats detail dump\r\n")
    counts = {}
    while (line := conn.readline()) != b"END":
        found = re.fullmatch(rb"PREFIX (.*) get (\d+) hit (\d+) set (\d+) del (\d+)", line)
        assert found, line
        counts[found[1].decode()] = tuple(int(n) for n in found.groups()[1:])
    return counts


def test_stats_detail_counts_per_prefix(server_factory):
    # A server of its own: the prefix counters are server-wide.
    srv = server_factory()
    with Conn(*srv.addr) as conn:
        usage = b"CLIENT_ERROR usage: stats detail on|off|dump"
        assert conn.cmd("stats detail") == usage
        assert conn.cmd("stats detail sideways") == usage
        assert detail_dump(conn) == {}
        assert conn.stats("settings")["detail_enabled"] == "no"
        assert conn.stats("settings")["stat_key_prefix"] == ":"
        assert conn.set("a:1", "x") == b"STORED", "not counted: detail is off"
        assert conn.cmd("stats detail on") == b"OK"
        assert conn.stats("settings")["detail_enabled"] == "yes"

        assert conn.set("a:1", "x") == b"STORED"
        conn.send("get a:1 a:2 b:3 nodelimiter\r\n")
        assert [v[0] for v in conn.read_values()] == ["a:1"]
        conn.send("gets a:1\r\ngat 10 a:1\r\n")
        conn.read_values()
        conn.read_values()
        # Counted whether or not the key exists.
        assert conn.cmd("delete a:1") == b"DELETED"
        assert conn.cmd("delete a:9") == b"NOT_FOUND"
        # Not counted at all: text touch, incr/decr and the meta commands.
        assert conn.cmd("touch b:3 10") == b"NOT_FOUND"
        assert conn.cmd("incr a:5 1") == b"NOT_FOUND"
        assert conn.cmd("mg a:1 v") == b"EN"
        assert conn.cmd("ms c:1 1\r\nx") == b"HD"
        # Every storage command counts a set, whatever its outcome.
        assert conn.store("add", "d:1", "x") == b"STORED"
        assert conn.store("append", "d:1", "y") == b"STORED"
        assert conn.store("cas", "d:1", "z", extra="1") == b"EXISTS"
        # The prefix ends at the first delimiter, and may be empty.
        assert conn.set(":x", "x") == b"STORED"
        assert conn.set("e::x", "x") == b"STORED"
        expected = {"a": (4, 3, 1, 2), "b": (1, 0, 0, 0), "d": (0, 0, 3, 0),
                    "": (0, 0, 1, 0), "e": (0, 0, 1, 0)}
        assert detail_dump(conn) == expected

        # Off keeps what was counted and counts no more; stats reset clears it.
        assert conn.cmd("stats detail off") == b"OK"
        assert conn.set("a:2", "x") == b"STORED"
        assert detail_dump(conn) == expected
        assert conn.cmd("stats reset") == b"RESET"
        assert detail_dump(conn) == {}


def test_stats_detail_counts_binary_requests(server_factory):
    # memcached counts every binary store as a set, and binary get, getk, getq, touch
    # and gat as gets (text touch is not counted); binary delete counts either way.
    srv = server_factory()
    store_extras = struct.pack(">II", 0, 0)
    touch_extras = struct.pack(">I", 100)
    requests = [
        (OP_SET, b"bin:1", b"v", store_extras),
        (0x02, b"bin:2", b"v", store_extras),    # add
        (0x0E, b"bin:1", b"w", b""),             # append
        (0x00, b"bin:1", b"", b""),              # get, hit
        (0x0C, b"bin:9", b"", b""),              # getk, miss
        (0x1C, b"bin:1", b"", touch_extras),     # touch, hit
        (0x1D, b"bin:8", b"", touch_extras),     # gat, miss
        (0x04, b"bin:2", b"", b""),              # delete, found
        (0x04, b"bin:7", b"", b""),              # delete, missing
        (0x05, b"bin:5", b"", struct.pack(">QQI", 1, 0, 0)),  # incr: not counted
    ]
    with Conn(*srv.addr) as conn:
        assert conn.cmd("stats detail on") == b"OK"
    # A connection speaks the protocol of its first byte.
    with Conn(*srv.addr) as conn:
        for opcode, key, value, extras in requests:
            conn.send(bin_request(opcode, key, value, extras))
            assert read_bin(conn).opcode == opcode
    with Conn(*srv.addr) as conn:
        assert detail_dump(conn) == {"bin": (4, 2, 3, 2)}
    with Conn(*srv.addr) as conn:
        # Over the binary protocol the dump is one stat, "detailed", then the terminator.
        conn.send(bin_request(0x10, b"detail dump"))
        dump = read_bin(conn)
        assert (dump.key, dump.value) == (b"detailed",
                                          b"PREFIX bin get 4 hit 2 set 3 del 2\r\nEND\r\n")
        assert read_bin(conn).key == b""


def test_stats_unknown_subcommand(conn):
    # memcached answers an unknown stats group with a generic error
    assert conn.cmd("stats nosuchgroup") == b"ERROR"


def test_shutdown_is_refused_unless_enabled(conn):
    assert conn.cmd("shutdown") == b"ERROR: shutdown not enabled"
    assert conn.cmd("shutdown graceful") == b"ERROR: shutdown not enabled"
    assert conn.cmd("version").startswith(b"VERSION ")


def test_shutdown_when_enabled_stops_the_server(server_factory, target, key):
    srv = server_factory(enable_shutdown=True)
    with Conn(*srv.addr) as conn:
        assert conn.set(key, "kept") == b"STORED"
        assert conn.cmd("shutdown sideways") == b"CLIENT_ERROR invalid shutdown mode"
        assert conn.cmd("version").startswith(b"VERSION "), "a refused mode stops nothing"
        conn.send("shutdown graceful\r\n")
        assert conn.expect_closed() == b""
    assert srv.proc.wait(timeout=30) == 0, srv.log_tail()
    if target == "murakumo":
        # Stopped as on SIGTERM: what was acknowledged is there after a restart.
        srv.start()
        with Conn(*srv.addr) as conn:
            assert conn.get(key) == b"kept"


def test_sighup_leaves_the_server_serving(server_factory, key):
    # memcached handles SIGHUP and goes on; the default action would kill the process
    # without a clean shutdown.
    srv = server_factory()
    with Conn(*srv.addr) as conn:
        assert conn.set(key, "before") == b"STORED"
        srv.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert srv.alive(), srv.log_tail()
        assert conn.get(key) == b"before", "the open connection was dropped"
    with Conn(*srv.addr) as conn:
        assert conn.set(key, "after") == b"STORED"


# -- pipelining -------------------------------------------------------------------------


def test_pipelined_commands_answer_in_order(conn, key):
    # 200 mixed commands in one send; a model of the store says what each
    # answer must be, so an answer out of order or missing fails the test.
    ops = []
    for i in range(200):
        k = f"{key}_{i % 17}"
        ops.append((("set", "get", "delete", "version", "mn")[i % 5], k, i))
    wire = []
    for op, k, i in ops:
        if op == "set":
            wire.append(f"set {k} {i} 0 {len(str(i))}\r\n{i}\r\n")
        elif op in ("get", "delete"):
            wire.append(f"{op} {k}\r\n")
        else:
            wire.append(f"{op}\r\n")
    conn.send("".join(wire))
    model: dict[str, tuple[int, bytes]] = {}
    for op, k, i in ops:
        if op == "set":
            model[k] = (i, str(i).encode())
            assert conn.readline() == b"STORED", i
        elif op == "get":
            want = [(k, model[k][0], model[k][1], None)] if k in model else []
            assert conn.read_values() == want, i
        elif op == "delete":
            assert conn.readline() == (b"DELETED" if model.pop(k, None) else b"NOT_FOUND"), i
        elif op == "version":
            assert conn.readline().startswith(b"VERSION "), i
        else:
            assert conn.readline() == b"MN", i
    assert conn.nothing_pending(0.1)


def test_large_pipeline_of_gets(conn, key):
    conn.set(key, "v" * 1000)
    n = 2000
    conn.send(f"get {key}\r\n" * n)
    for _ in range(n):
        assert conn.read_values() == [(key, 0, b"v" * 1000, None)]
