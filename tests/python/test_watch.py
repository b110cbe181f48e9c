"""`watch`: a connection that asks for it is sent a log line per event from then on, in
memcached's format (`ts=... gid=... type=...`), so that the scripts operators use on
memcached to find hot keys and see who writes what work on a node.

memcached logs a few extra lines of its own (a `set` also logs the lookup it makes inside,
as an `item_get`), so these tests look for the lines a client's commands must produce,
in order, rather than for an exact transcript. Run with ``--target memcached`` they check
the expectations against memcached 1.6.18.
"""

from __future__ import annotations

import re
import socket
import time

from mcwire import Conn

LINE = re.compile(r"^ts=\d+\.\d+ gid=(\d+) type=(\w+) (.*)$")


class Watch:
    """A watching connection: sends `watch ...`, checks the `OK`, then reads log lines."""

    def __init__(self, addr: tuple[str, int], kinds: str = ""):
        self.conn = Conn(*addr)
        self.conn.send(f"watch {kinds}".rstrip() + "\r\n")
        assert self.conn.readline() == b"OK"
        self.seen: list[str] = []

    def close(self) -> None:
        self.conn.close()

    def lines_until(self, want: list[str], timeout: float = 5.0) -> list[str]:
        """Reads log lines until every pattern of `want` has matched a line, in that order;
        returns all lines read. Fails after `timeout` with what did arrive."""
        deadline = time.monotonic() + timeout
        pending = [re.compile(p) for p in want]
        while pending:
            left = deadline - time.monotonic()
            assert left > 0, f"waiting for {[p.pattern for p in pending]}; got {self.seen}"
            self.conn.sock.settimeout(left)
            try:
                line = self.conn.readline(bare_lf=True).decode()
            except socket.timeout:
                continue
            self.seen.append(line)
            if pending[0].search(line):
                pending.pop(0)
        return self.seen


def fields(line: str) -> dict[str, str]:
    match = LINE.match(line)
    assert match, line
    out = dict(kv.split("=", 1) for kv in match.group(3).split())
    out["gid"], out["type"] = match.group(1), match.group(2)
    return out


def test_fetches_and_storage_commands_are_logged(server_factory):
    srv = server_factory()
    watcher = Watch(srv.addr, "fetchers mutations")
    with Conn(*srv.addr) as c:
        assert c.set("watched:1", "abc", flags=5, exptime=100) == b"STORED"
        c.send("get watched:1 watched:absent\r\n")
        assert c.readline() == b"VALUE watched:1 5 3"
        c.read_block(3)
        assert c.readline() == b"END"
        c.send("add watched:1 0 0 1\r\nx\r\n")
        assert c.readline() == b"NOT_STORED"
        c.send("cas watched:1 0 0 1 987654321\r\nx\r\n")
        assert c.readline() == b"EXISTS"
        c.send("ms watched:2 2\r\nhi\r\n")
        assert c.readline() == b"HD"
        c.send("mg watched:2 v\r\n")
        assert c.readline() == b"VA 2"
        c.read_block(2)
    lines = watcher.lines_until([
        r"type=item_store key=watched%3A1 status=stored cmd=set ttl=100 clsid=1 cfd=\d+ size=3$",
        r"type=item_get key=watched%3A1 status=found clsid=1 cfd=\d+ size=3$",
        r"type=item_get key=watched%3Aabsent status=not_found clsid=0 cfd=\d+ size=0$",
        r"type=item_store key=watched%3A1 status=not_stored cmd=add ttl=0 .* size=1$",
        r"type=item_store key=watched%3A1 status=exists cmd=cas ttl=0 .* size=1$",
        r"type=item_store key=watched%3A2 status=stored cmd=set ttl=0 .* size=2$",
        r"type=item_get key=watched%3A2 status=found clsid=1 cfd=\d+ size=2$",
    ])
    gids = [int(fields(line)["gid"]) for line in lines]
    assert gids == sorted(gids) and len(set(gids)) == len(gids), lines
    with Conn(*srv.addr) as c:
        stats = c.stats()
    for field in ("log_worker_dropped", "log_worker_written", "log_watcher_skipped",
                  "log_watcher_sent", "log_watchers"):
        assert stats[field].isdigit(), (field, stats)
    # Neither kind was asked for connection events.
    assert not [line for line in lines if "type=conn_" in line], lines
    watcher.close()


def test_plain_watch_logs_fetches_only(server_factory):
    srv = server_factory()
    watcher = Watch(srv.addr)
    with Conn(*srv.addr) as c:
        assert c.set("plain", "x") == b"STORED"
        assert c.get("plain") == b"x"
    lines = watcher.lines_until([r"type=item_get key=plain status=found"])
    assert not [line for line in lines if "item_store" in line], lines
    watcher.close()


def test_connections_are_logged_with_their_address(server_factory):
    srv = server_factory()
    watcher = Watch(srv.addr, "connevents")
    c = Conn(*srv.addr)
    port = c.sock.getsockname()[1]
    c.send("version\r\n")
    assert c.readline().startswith(b"VERSION ")
    c.send("quit\r\n")
    c.expect_closed()
    lines = watcher.lines_until([
        rf"type=conn_new rip=127\.0\.0\.1 rport={port} transport=tcp cfd=\d+$",
        rf"type=conn_close rip=127\.0\.0\.1 rport={port} transport=tcp reason=normal cfd=\d+$",
    ])
    opened = [fields(line) for line in lines if f"rport={port}" in line]
    assert opened[0]["cfd"] == opened[-1]["cfd"], lines
    watcher.close()


def test_unknown_kinds_are_refused_and_the_connection_serves_on(server_factory):
    srv = server_factory()
    with Conn(*srv.addr) as c:
        c.send("watch fetchers bogus\r\n")
        assert c.readline() == b"ERROR"
        c.send("version\r\n")
        assert c.readline().startswith(b"VERSION ")


def test_watchers_beyond_the_limit_are_refused(server_factory):
    srv = server_factory()
    watchers = [Watch(srv.addr) for _ in range(20)]
    with Conn(*srv.addr) as c:
        c.send("watch\r\n")
        assert c.readline() == b"WATCHER_TOO_MANY log watcher limit reached"
        # Still an ordinary connection.
        c.send("version\r\n")
        assert c.readline().startswith(b"VERSION ")
    watchers.pop().close()
    # A closed watcher frees its place (the server notices the close asynchronously).
    deadline = time.monotonic() + 5
    while True:
        with Conn(*srv.addr) as c:
            c.send("watch\r\n")
            reply = c.readline()
        if reply == b"OK" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert reply == b"OK"
    for w in watchers:
        w.close()


def test_a_watcher_that_stops_reading_holds_up_nobody(server_factory):
    """A watcher that never reads does not hold up the clients it watches (a server that
    waited for it would leave these gets unanswered, and the reads would time out), and
    logging goes on for the others. What a stalled watcher misses is counted and reported
    to it (`skipped=N`): the gateway's unit tests check that, since how much of a backlog
    the kernel's socket buffers absorb first varies from machine to machine."""
    srv = server_factory()
    stalled = Conn(*srv.addr)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.send("watch fetchers\r\n")
    key = "k" * 200
    with Conn(*srv.addr) as c:
        c.send(f"set {key} 0 0 1\r\nx\r\n")
        assert c.readline() == b"STORED"
        batch = f"get {key}\r\n".encode() * 500
        for _ in range(40):  # 20,000 gets, each logging a ~300-byte line: ~6 MB of log
            c.send(batch)
            for _ in range(500):
                assert c.readline() == f"VALUE {key} 0 1".encode()
                c.read_block(1)
                assert c.readline() == b"END"
    other = Watch(srv.addr, "fetchers")
    with Conn(*srv.addr) as c:
        c.send("get after-the-stall\r\n")
        assert c.readline() == b"END"
    other.lines_until([r"type=item_get key=after-the-stall status=not_found"])
    other.close()
    stalled.close()
