"""Large values in replies: exact bytes, in order, to slow readers, and bounded memory.

A server may send a large value from where it stores it (with a vectored write) rather
than copying it into its reply buffer; these tests pin down what a client must see either
way: every byte of every value, in request order, with the small replies around it intact,
however the socket splits the stream. They also check that connections which once moved
a large value do not keep its size in buffers afterwards. Every test passes against
memcached too (``--target memcached``).
"""

from __future__ import annotations

import struct
import time

from mcwire import Conn, bin_request, random_bytes, read_bin, rss_kib, unique

# Around the sizes where a server may switch between copying and sending in place.
SIZES = [0, 1, 100, 16 * 1024 - 1, 16 * 1024, 100 * 1024, 1000 * 1000]

OP_GETK = 0x0C
OP_GETKQ = 0x0D
OP_NOOP = 0x0A


def store_values(conn: Conn, prefix: str) -> dict[bytes, bytes]:
    values = {}
    for n, size in enumerate(SIZES):
        key = f"{prefix}_{n}".encode()
        value = random_bytes(size, seed=n)
        conn.send(b"set %s %d 0 %d\r\n%s\r\n" % (key, n, size, value))
        assert conn.readline() == b"STORED"
        values[key] = value
    return values


def read_slowly(conn: Conn, n: int) -> bytes:
    """Read ``n`` bytes a little at a time, so the server's writes fill the socket (the
    reply is larger than its buffers) and have to be resumed part-way through a value."""
    data = bytearray()
    deadline = time.monotonic() + 60
    while len(data) < n:
        assert time.monotonic() < deadline, f"only {len(data)} of {n} bytes after 60 s"
        chunk = conn.sock.recv(min(7919, n - len(data)))
        assert chunk, f"connection closed after {len(data)} of {n} bytes"
        data += chunk
        if len(data) < 2 << 20:
            time.sleep(0.0005)
    return bytes(data)


def test_multi_get_of_large_and_small_values_is_exact(connect):
    conn = connect()
    values = store_values(conn, unique("lv_text"))
    keys = list(values)
    # Twice over, and pipelined with a miss and a version between the gets.
    request = b"get %s\r\nget lv_missing_key\r\ngets %s\r\nversion\r\n" % (
        b" ".join(keys + keys), b" ".join(keys))
    conn.send(request)
    expected = bytearray()
    for key in keys + keys:
        n = keys.index(key)
        expected += b"VALUE %s %d %d\r\n%s\r\n" % (key, n, len(values[key]), values[key])
    expected += b"END\r\nEND\r\n"
    head = read_slowly(conn, len(expected))
    assert head == bytes(expected)
    for key in keys:
        line = conn.readline().split()
        assert line[:4] == [b"VALUE", key, str(keys.index(key)).encode(),
                            str(len(values[key])).encode()]
        assert conn.read_block(len(values[key])) == values[key]
    assert conn.readline() == b"END"
    assert conn.readline().startswith(b"VERSION ")


def test_meta_get_of_large_values_is_exact(connect):
    conn = connect()
    values = store_values(conn, unique("lv_meta"))
    request = b"".join(b"mg %s v f k O%d\r\n" % (key, n) for n, key in enumerate(values))
    conn.send(request + b"mn\r\n")
    for n, (key, value) in enumerate(values.items()):
        line = conn.readline().split()
        assert line[0] == b"VA" and int(line[1]) == len(value), line
        assert set(line[2:]) == {b"f%d" % n, b"k" + key, b"O%d" % n}, line
        assert conn.read_block(len(value)) == value
    assert conn.readline() == b"MN"


def test_binary_get_of_large_values_is_exact(connect):
    values = store_values(connect(), unique("lv_bin"))
    # A connection's protocol is fixed by its first byte: binary needs its own.
    conn = connect()
    frames = b"".join(bin_request(OP_GETKQ if n % 2 else OP_GETK, key=key, opaque=n)
                      for n, key in enumerate(values))
    conn.send(frames + bin_request(OP_NOOP, opaque=999))
    for n, (key, value) in enumerate(values.items()):
        reply = read_bin(conn)
        assert (reply.status, reply.opaque, reply.key) == (0, n, key)
        assert struct.unpack(">I", reply.extras)[0] == n
        assert reply.value == value
    assert read_bin(conn).opaque == 999


def test_connections_that_moved_large_values_do_not_keep_their_size(connect, server_pid):
    """Idle connections must not hold buffers the size of the largest value they once
    sent or received: 200 connections that had each fetched 1 MB and sent 1 MB would
    otherwise hold 200 MB or more between them. The 1 MB sent is a ``cas`` on a missing
    key: the server reads the whole value but stores nothing, so only the connection's
    own buffers can grow."""
    conns = 200
    size = 1000 * 1000
    value = random_bytes(size, seed=7)
    key = unique("lv_idle").encode()
    setup = connect()
    setup.send(b"set %s 0 0 %d\r\n%s\r\n" % (key, size, value))
    assert setup.readline() == b"STORED"

    def fetch_one_and_send_one(c: Conn) -> None:
        c.send(b"get %s\r\n" % key)
        assert c.readline().startswith(b"VALUE")
        assert c.read_block(size) == value
        assert c.readline() == b"END"
        c.send(b"cas %s_missing 0 0 %d 1\r\n%s\r\n" % (key, size, value))
        assert c.readline() == b"NOT_FOUND"

    # Warm up allocator and caches with the same traffic before the baseline.
    for _ in range(3):
        fetch_one_and_send_one(setup)
    before = rss_kib(server_pid)
    held = []
    for _ in range(conns):
        c = connect()
        fetch_one_and_send_one(c)
        held.append(c)
    grown_mib = (rss_kib(server_pid) - before) / 1024
    # Per connection that is under 400 KiB, where one kept buffer would be over 1 MB.
    assert grown_mib < 80, f"{conns} idle connections grew the server by {grown_mib:.0f} MiB"
