"""Meta protocol (mg, ms, md, ma, mn, me), written from memcached's doc/protocol.txt
and t/metaget.t, and checked line by line against memcached 1.6.18 (Debian 12).

Where 1.6.18 and the current protocol.txt disagree, the test follows 1.6.18 and says
so in a ``NOTE(1.6.18)`` comment. One flag, ``E`` (caller-chosen CAS), does not exist
in 1.6.18 at all; that test expects 1.6.18's ``CLIENT_ERROR invalid flag`` from
memcached and protocol.txt's semantics from murakumo.
"""

from __future__ import annotations

import base64
import re
import time

import pytest

from mcwire import meta, read_meta, unique


@pytest.fixture
def key() -> str:
    return unique("meta")


def cas_of(conn, key: str) -> int:
    reply = meta(conn, f"mg {key} c")
    assert reply.code == "HD", reply
    return int(reply.flag("c"))


# -- mg: retrieval flags --------------------------------------------------------


def test_mg_miss_is_en(conn, key):
    assert conn.cmd(f"mg {key} v") == b"EN"
    assert conn.cmd(f"mg {key}") == b"EN"


def test_mg_hit_without_v_is_hd_with_no_flags(conn, key):
    assert conn.store("set", key, "hi") == b"STORED"
    assert conn.cmd(f"mg {key}") == b"HD"


def test_mg_value_and_flags_in_request_order(conn, key):
    conn.send(f"ms {key} 5 F77 T0\r\nhello\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"mg {key} s v f t k O123\r\n")
    line = conn.readline()
    assert line == f"VA 5 s5 f77 t-1 k{key} O123".encode()
    assert conn.read_block(5) == b"hello"
    # the same flags in another order come back in that order
    conn.send(f"mg {key} O9 k t f v s\r\n")
    assert conn.readline() == f"VA 5 O9 k{key} t-1 f77 s5".encode()
    assert conn.read_block(5) == b"hello"


def test_mg_cas_matches_gets(conn, key):
    conn.store("set", key, "abc")
    data, _flags, cas = conn.gets(key)
    assert data == b"abc"
    assert conn.cmd(f"mg {key} c") == f"HD c{cas}".encode()


def test_mg_ttl_remaining(conn, key):
    conn.send(f"ms {key} 2 T100\r\nhi\r\n")
    assert conn.readline() == b"HD"
    ttl = int(meta(conn, f"mg {key} t").flag("t"))
    assert 98 <= ttl <= 100


def test_mg_opaque_and_key_echo_on_miss(conn, key):
    # NOTE(1.6.18): EN carries the k and O return flags on a miss.
    assert conn.cmd(f"mg {key} k O55 v") == f"EN k{key} O55".encode()


def test_mg_opaque_too_long(conn, key):
    conn.store("set", key, "x")
    assert conn.cmd(f"mg {key} v O{'a' * 40}") == b"CLIENT_ERROR opaque token too long"


def test_mg_hit_and_last_access(conn, key):
    conn.store("set", key, "hi")
    assert conn.cmd(f"mg {key} h l") == b"HD h0 l0"
    assert conn.cmd(f"mg {key} h") == b"HD h1"


def test_mg_last_access_grows(conn, key):
    conn.store("set", key, "la")
    time.sleep(2.2)
    la = int(meta(conn, f"mg {key} l").flag("l"))
    assert la >= 1


def test_mg_touch_with_T(conn, key):
    conn.send(f"ms {key} 4 T100\r\nooom\r\n")
    assert conn.readline() == b"HD"
    # 't' before 'T' reports the TTL before the update
    assert conn.cmd(f"mg {key} t T300") in (b"HD t100", b"HD t99")
    ttl = int(meta(conn, f"mg {key} t").flag("t"))
    assert 298 <= ttl <= 300
    # 'T' before 't' reports the TTL after it
    reply = meta(conn, f"mg {key} s v T500 t")
    assert reply.value == b"ooom"
    assert 498 <= int(reply.flag("t")) <= 500


def test_mg_quiet_hides_miss_only(conn, key):
    conn.store("set", key, "hi")
    # q hides EN; a hit is still answered, HD included (NOTE(1.6.18)).
    conn.send(f"mg {key}_absent v q\r\nmg {key} v q\r\nmg {key} q k\r\nmn\r\n")
    assert conn.readline() == b"VA 2"
    assert conn.read_block(2) == b"hi"
    assert conn.readline() == f"HD k{key}".encode()
    assert conn.readline() == b"MN"


def test_mn_flushes_quiet_pipeline(conn, key):
    conn.send(f"mg {key}_a v q\r\nmg {key}_b v q\r\nmg {key}_c v q\r\nmn\r\n")
    assert conn.readline() == b"MN"
    assert conn.nothing_pending()


def test_base64_keys(conn):
    raw = unique("b64").encode() + b"\x00\xff\r\n binary"
    enc = base64.b64encode(raw).decode()
    conn.send(f"ms {enc} 2 b\r\npo\r\n")
    assert conn.readline() == b"HD"
    # without b the encoded text is a different (absent) key
    assert conn.cmd(f"mg {enc} v") == b"EN"
    conn.send(f"mg {enc} b k v\r\n")
    assert conn.readline() == f"VA 2 k{enc} b".encode()
    assert conn.read_block(2) == b"po"
    assert conn.cmd(f"md {enc} b") == b"HD"
    assert conn.cmd(f"mg {enc} b v") == b"EN"


def test_base64_key_is_the_same_key_as_its_text(conn, key):
    enc = base64.b64encode(key.encode()).decode()
    conn.send(f"ms {enc} 2 b\r\nhi\r\n")
    assert conn.readline() == b"HD"
    assert conn.get(key) == b"hi"


def test_base64_key_that_does_not_decode(conn):
    conn.send("ms b64 2 b\r\nhi\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR error decoding key"
    # the value block was swallowed, not run as a command
    assert conn.readline() == b"MN"


def test_base64_key_with_ma_and_me(conn, key):
    enc = base64.b64encode(key.encode()).decode()
    conn.send(f"ms {enc} 1 b\r\n7\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"ma {enc} b v k\r\n")
    assert conn.readline() == f"VA 1 k{enc} b".encode()
    assert conn.read_block(1) == b"8"
    assert conn.cmd(f"me {enc} b").startswith(f"ME {enc} ".encode())


# -- vivify, recache, stale: the anti-dogpile flags ----------------------------


def test_vivify_on_miss(conn, key):
    first = meta(conn, f"mg {key} N30 s v t c")
    assert first.code == "VA" and first.value == b""
    assert first.flag("s") == "0"
    assert 29 <= int(first.flag("t")) <= 30
    assert first.has("W") and not first.has("Z")
    second = meta(conn, f"mg {key} N30 s v t c")
    assert second.code == "VA" and second.value == b""
    assert second.has("Z") and not second.has("W")
    assert second.flag("c") == first.flag("c")
    # without v a vivified miss is HD
    assert conn.cmd(f"mg {key}_nov N30") == b"HD W"
    assert conn.cmd(f"mg {key}_nov N30") == b"HD Z"


def test_vivify_then_fill_with_cas(conn, key):
    won = meta(conn, f"mg {key} N30 c v")
    assert won.has("W")
    conn.send(f"ms {key} 2 C{int(won.flag('c')) + 1000} T120\r\nnu\r\n")
    assert conn.readline() == b"EX"
    conn.send(f"ms {key} 2 C{won.flag('c')} T120\r\nmu\r\n")
    assert conn.readline() == b"HD"
    after = meta(conn, f"mg {key} s k t v N30")
    assert after.value == b"mu"
    assert not after.has("W") and not after.has("Z")
    assert after.flag("k") == key
    assert 118 <= int(after.flag("t")) <= 120


def test_recache_when_ttl_below_token(conn, key):
    conn.send(f"ms {key} 2 T100\r\nab\r\n")
    assert conn.readline() == b"HD"
    # TTL 100 is above R30: nobody is asked to recache
    plain = meta(conn, f"mg {key} R30 v")
    assert plain.value == b"ab" and not plain.has("W") and not plain.has("Z")
    won = meta(conn, f"mg {key} R130 v")
    assert won.value == b"ab" and won.has("W") and not won.has("Z")
    lost = meta(conn, f"mg {key} R130 v")
    assert lost.value == b"ab" and lost.has("Z") and not lost.has("W")


def test_md_invalidate_serves_stale_once_won(conn, key):
    conn.store("set", key, "moo")
    before = meta(conn, f"mg {key} s v")
    assert not (before.has("X") or before.has("W") or before.has("Z"))
    assert conn.cmd(f"md {key} I T30") == b"HD"
    stale = meta(conn, f"mg {key} s t c v")
    assert stale.value == b"moo"
    assert stale.has("X") and stale.has("W") and not stale.has("Z")
    assert 29 <= int(stale.flag("t")) <= 30
    again = meta(conn, f"mg {key} s t c v")
    assert again.has("X") and again.has("Z") and not again.has("W")
    # a set with a lower CAS fails; with I it stores but stays stale
    conn.send(f"ms {key} 1 T90 C1\r\nf\r\n")
    assert conn.readline() == b"EX"
    conn.send(f"ms {key} 1 I T90 C1\r\nf\r\n")
    assert conn.readline() == b"HD"
    still = meta(conn, f"mg {key} s t c v")
    assert still.has("X")
    # the right CAS revalidates the item
    conn.send(f"ms {key} 1 T90 C{still.flag('c')}\r\ng\r\n")
    assert conn.readline() == b"HD"
    fresh = meta(conn, f"mg {key} s t c v")
    assert fresh.value == b"g"
    assert not (fresh.has("X") or fresh.has("W") or fresh.has("Z"))
    assert 88 <= int(fresh.flag("t")) <= 90
    assert fresh.flag("c") != still.flag("c")


def test_ms_invalidate_with_older_cas_marks_stale(conn, key):
    conn.send(f"ms {key} 3 T100\r\nold\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"ms {key} 3 I C1\r\nnew\r\n")
    assert conn.readline() == b"HD"
    reply = meta(conn, f"mg {key} v c")
    assert reply.value == b"new"
    assert reply.has("X") and reply.has("W")


# -- ms ------------------------------------------------------------------------


def test_ms_basic_and_flags(conn, key):
    conn.send(f"ms {key} 2 F5 T0\r\nhi\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"get {key}\r\n")
    assert conn.read_values() == [(key, 5, b"hi", None)]


def test_ms_return_flags(conn, key):
    conn.send(f"ms {key} 2 c k O9\r\nhi\r\n")
    line = conn.readline().decode()
    m = re.fullmatch(rf"HD c(\d+) k{re.escape(key)} O9", line)
    assert m, line
    assert int(m.group(1)) == cas_of(conn, key)


def test_ms_cas_compare(conn, key):
    conn.send(f"ms {key} 2\r\nbo\r\n")
    assert conn.readline() == b"HD"
    cas = cas_of(conn, key)
    conn.send(f"ms {key} 2 c C{cas + 10}\r\nio\r\n")
    # NOTE(1.6.18): a failed ms returns c0
    assert conn.readline() == b"EX c0"
    conn.send(f"ms {key} 2 c C{cas}\r\nio\r\n")
    line = conn.readline().decode()
    m = re.fullmatch(r"HD c(\d+)", line)
    assert m and int(m.group(1)) != cas, line
    assert conn.get(key) == b"io"


def test_ms_cas_on_missing_key_is_nf(conn, key):
    conn.send(f"ms {key} 2 C1\r\nhi\r\n")
    assert conn.readline() == b"NF"


def test_ms_negative_ttl_is_expired(conn, key):
    conn.send(f"ms {key} 1 T-1\r\nx\r\n")
    assert conn.readline() == b"HD"
    assert conn.cmd(f"mg {key} v") == b"EN"


def test_ms_modes(conn, key):
    conn.send(f"ms {key} 2 T120\r\naa\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"ms {key} 2 ME\r\nzz\r\n")
    assert conn.readline() == b"NS", "add over an existing key"
    conn.send(f"ms {key}_new 2 ME\r\nbb\r\n")
    assert conn.readline() == b"HD", "add of a new key"
    conn.send(f"ms {key}_new 2 MA\r\ncc\r\n")
    assert conn.readline() == b"HD", "append"
    conn.send(f"ms {key}_new 2 MP\r\n00\r\n")
    assert conn.readline() == b"HD", "prepend"
    conn.send(f"mg {key}_new s v\r\n")
    assert conn.readline() == b"VA 6 s6"
    assert conn.read_block(6) == b"00bbcc"
    conn.send(f"ms {key}_none 2 MR\r\nxx\r\n")
    assert conn.readline() == b"NS", "replace of a missing key"
    conn.send(f"ms {key}_none 2 MA\r\nxx\r\n")
    assert conn.readline() == b"NS", "append to a missing key"
    conn.send(f"ms {key}_none 2 MP\r\nxx\r\n")
    assert conn.readline() == b"NS", "prepend to a missing key"
    conn.send(f"ms {key} 2 MR F3\r\nrr\r\n")
    assert conn.readline() == b"HD", "replace"
    conn.send(f"ms {key} 2 MS F7\r\nss\r\n")
    assert conn.readline() == b"HD", "explicit set"
    conn.send(f"mg {key} f v\r\n")
    assert conn.readline() == b"VA 2 f7"
    assert conn.read_block(2) == b"ss"


def test_ms_append_keeps_flags(conn, key):
    conn.send(f"ms {key} 2 F42\r\nab\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"ms {key} 2 MA F1\r\ncd\r\n")
    assert conn.readline() == b"HD"
    conn.send(f"mg {key} f v\r\n")
    assert conn.readline() == b"VA 4 f42"
    assert conn.read_block(4) == b"abcd"


def test_ms_invalid_mode(conn, key):
    conn.send(f"ms {key} 2 MZ\r\ntt\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR invalid mode for ms M token"
    assert conn.readline() == b"MN", "the value block must be swallowed"
    assert conn.cmd(f"mg {key} v") == b"EN"


def test_ms_quiet(conn, key):
    conn.send(f"ms {key} 2 q\r\nhi\r\nms {key} 2 q ME\r\nhi\r\n"
              f"ms {key}_x 2 q C1\r\nhi\r\nms {key} 2 q C1\r\nhi\r\nmn\r\n")
    # q hides HD only: NS, NF and EX are still reported, in order
    assert conn.readline() == b"NS"
    assert conn.readline() == b"NF"
    assert conn.readline() == b"EX"
    assert conn.readline() == b"MN"
    assert conn.get(key) == b"hi"


def test_ms_bad_data_chunk(conn, key):
    conn.send(f"ms {key} 3\r\nabcd\r\n")
    assert conn.readline() == b"CLIENT_ERROR bad data chunk"
    # memcached answers the leftover bytes of the broken block with ERROR; what
    # matters is that nothing is stored and the connection stays usable.
    conn.send("mn\r\n")
    for _ in range(3):
        line = conn.readline()
        if line == b"MN":
            break
        assert line == b"ERROR", line
    else:
        raise AssertionError("no MN after a bad data chunk")
    assert conn.cmd(f"mg {key} v") == b"EN"
    assert conn.set(key, "ok") == b"STORED"
    assert conn.get(key) == b"ok"


def test_ms_bad_command_lines(conn, key):
    assert conn.cmd(f"ms {key}") == b"CLIENT_ERROR bad command line format"
    # a bad flag token: the error is sent and the value block swallowed
    conn.send(f"ms {key} 1 Fabc\r\nx\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR bad command line format"
    assert conn.readline() == b"MN"
    conn.send(f"ms {key} 1 Tabc\r\nx\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR bad token in command line format"
    assert conn.readline() == b"MN"
    conn.send(f"ms {key} 1 C\r\nx\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR bad token in command line format"
    assert conn.readline() == b"MN"
    # an unparsable length: there is no block length to swallow, so the value
    # line is read as a command
    conn.send(f"ms {key} -1\r\nx\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR bad command line format"
    assert conn.readline() == b"ERROR"
    assert conn.readline() == b"MN"
    assert conn.cmd(f"mg {key} v") == b"EN"


def test_meta_key_length_limit(conn):
    long_key = "k" * 251
    ok_key = unique("m").ljust(250, "k")
    assert conn.cmd(f"mg {long_key} v") == b"CLIENT_ERROR bad command line format"
    assert conn.cmd(f"md {long_key}") == b"CLIENT_ERROR bad command line format"
    assert conn.cmd(f"ma {long_key}") == b"CLIENT_ERROR bad command line format"
    conn.send(f"ms {ok_key} 2\r\nhi\r\n")
    assert conn.readline() == b"HD"
    assert conn.cmd(f"mg {ok_key} s") == b"HD s2"


# -- md ------------------------------------------------------------------------


def test_md(conn, key):
    assert conn.cmd(f"md {key}") == b"NF"
    conn.store("set", key, "x")
    assert conn.cmd(f"md {key} k O7") == f"HD k{key} O7".encode()
    assert conn.cmd(f"mg {key} v") == b"EN"
    assert conn.cmd(f"md {key} k O7") == f"NF k{key} O7".encode()


def test_md_cas(conn, key):
    conn.send(f"ms {key} 2\r\nzo\r\n")
    assert conn.readline() == b"HD"
    cas = cas_of(conn, key)
    assert conn.cmd(f"md {key} C{cas + 10}") == b"EX"
    assert conn.get(key) == b"zo"
    assert conn.cmd(f"md {key} C{cas}") == b"HD"
    assert conn.get(key) is None


def test_md_quiet(conn, key):
    conn.store("set", key, "x")
    conn.send(f"md {key} q\r\nmd {key} q\r\nmn\r\n")
    # NOTE(1.6.18): q hides HD but NF is still sent
    assert conn.readline() == b"NF"
    assert conn.readline() == b"MN"


# -- ma ------------------------------------------------------------------------


def test_ma_miss_and_non_numeric(conn, key):
    assert conn.cmd(f"ma {key}") == b"NF"
    assert conn.cmd(f"ma {key} D1") == b"NF"
    conn.store("set", key, "q")
    assert conn.cmd(f"ma {key}") == b"CLIENT_ERROR cannot increment or decrement non-numeric value"
    conn.store("set", key, "1")
    assert conn.cmd(f"ma {key}") == b"HD"
    assert conn.get(key) == b"2"


def test_ma_modes_and_delta(conn, key):
    conn.store("set", key, "5")
    expect = [("MI D3", b"8"), ("M+", b"9"), ("MD D2", b"7"), ("M-", b"6"),
              ("MD D100", b"0"), ("M+ D18446744073709551615", b"18446744073709551615"),
              ("M+ D2", b"1")]
    for flags, value in expect:
        reply = meta(conn, f"ma {key} {flags} v")
        assert (reply.code, reply.value) == ("VA", value), flags
        assert reply.size == len(value)


def test_ma_invalid_mode_and_delta(conn, key):
    conn.store("set", key, "5")
    assert conn.cmd(f"ma {key} MZ") == b"CLIENT_ERROR invalid mode for ma M token"
    assert conn.cmd(f"ma {key} Dabc") == b"CLIENT_ERROR invalid or duplicate flag"
    assert conn.get(key) == b"5"


def test_ma_vivify_with_initial_value(conn, key):
    reply = meta(conn, f"ma {key} N0 J13 v t")
    assert (reply.value, reply.flag("t")) == (b"13", "-1")
    assert meta(conn, f"ma {key} N0 J13 v").value == b"14"
    assert meta(conn, f"ma {key} N0 J13 v D30").value == b"44"
    assert meta(conn, f"ma {key} N0 J13 v MD D22").value == b"22"
    # N alone vivifies at 0
    assert meta(conn, f"ma {key}_z N90 v").value == b"0"
    ttl = int(meta(conn, f"mg {key}_z t").flag("t"))
    assert 88 <= ttl <= 90


def test_ma_ttl_update_and_return_flags(conn, key):
    conn.store("set", key, "1")
    reply = meta(conn, f"ma {key} T300 v t k O3")
    assert reply.value == b"2"
    assert 298 <= int(reply.flag("t")) <= 300
    assert reply.flag("k") == key and reply.flag("O") == "3"


def test_ma_cas(conn, key):
    first = meta(conn, f"ma {key} N0 c v")
    cas = int(first.flag("c"))
    assert conn.cmd(f"ma {key} N0 C{cas + 99999} v") == b"EX"
    second = meta(conn, f"ma {key} N0 C{cas} c v")
    assert second.value == b"1"
    assert int(second.flag("c")) != cas


def test_ma_quiet(conn, key):
    conn.store("set", key, "1")
    conn.send(f"ma {key} q D1\r\nma {key} q v\r\nma {key}_absent q\r\nmn\r\n")
    # q hides success (HD and VA); NF is still sent
    assert conn.readline() == b"NF"
    assert conn.readline() == b"MN"
    assert conn.get(key) == b"3"


# -- E: caller-chosen CAS ---------------------------------------------------


def test_E_flag(conn, key, target):
    if target == "memcached":
        # NOTE(1.6.18): E arrived after 1.6.18; 1.6.18 rejects it and stores nothing.
        conn.send(f"ms {key} 2 E999\r\nab\r\nmn\r\n")
        assert conn.readline() == b"CLIENT_ERROR invalid flag"
        assert conn.readline() == b"MN"
        assert conn.cmd(f"mg {key} v") == b"EN"
        assert conn.cmd(f"ma {key} N0 E5") == b"CLIENT_ERROR invalid or duplicate flag"
        return
    # protocol.txt: E(token) uses token as the new CAS value when the item changes
    conn.send(f"ms {key} 2 E999 c\r\nab\r\n")
    assert conn.readline() == b"HD c999"
    assert cas_of(conn, key) == 999
    assert meta(conn, f"ma {key}_n N0 E4242 c v").flag("c") == "4242"
    conn.store("set", f"{key}_n", "5")
    assert meta(conn, f"ma {key}_n E77 c v").flag("c") == "77"
    assert conn.cmd(f"md {key} I E555") == b"HD"
    assert cas_of(conn, key) == 555


# -- me, mn, errors ---------------------------------------------------------


def test_me(conn, key):
    assert conn.cmd(f"me {key}") == b"EN"
    conn.send(f"ms {key} 2 T0 c\r\nhi\r\n")
    cas = int(conn.readline().decode().removeprefix("HD c"))
    line = conn.cmd(f"me {key}").decode()
    assert line.startswith(f"ME {key} ")
    fields = dict(tok.split("=", 1) for tok in line.split(" ")[2:])
    assert fields["exp"] == "-1"
    assert fields["cas"] == str(cas)
    assert fields["fetch"] == "no"
    assert int(fields["la"]) >= 0
    conn.get(key)
    fields = dict(tok.split("=", 1) for tok in conn.cmd(f"me {key}").decode().split(" ")[2:])
    assert fields["fetch"] == "yes"


def test_mn_alone_and_with_args(conn):
    assert conn.cmd("mn") == b"MN"
    assert conn.cmd("mn extra") == b"MN"


@pytest.mark.parametrize("line,reply", [
    ("mg {k} Z", b"CLIENT_ERROR invalid flag"),
    ("mg {k} v v", b"CLIENT_ERROR duplicate flag"),
    ("mg {k} !", b"CLIENT_ERROR invalid flag"),
    ("md {k} Z", b"CLIENT_ERROR invalid or duplicate flag"),
    ("ma {k} Z", b"CLIENT_ERROR invalid or duplicate flag"),
    ("mg", b"ERROR"),
])
def test_invalid_flags(conn, key, line, reply):
    conn.store("set", key, "1")
    assert conn.cmd(line.format(k=key)) == reply
    # the connection survives and the item is untouched
    assert conn.get(key) == b"1"


def test_ms_invalid_flag_swallows_value(conn, key):
    conn.send(f"ms {key} 2 Z\r\nab\r\nmn\r\n")
    assert conn.readline() == b"CLIENT_ERROR invalid flag"
    assert conn.readline() == b"MN"
    assert conn.cmd(f"mg {key} v") == b"EN"


def test_meta_pipeline_with_opaques(conn, key):
    conn.send("".join(f"ms {key}_{i} 1 q\r\n{i % 10}\r\n" for i in range(50)))
    conn.send("".join(f"mg {key}_{i} v O{i} q\r\n" for i in range(0, 60)) + "mn\r\n")
    got = {}
    while True:
        reply = read_meta(conn)
        if reply.code == "MN":
            break
        got[int(reply.flag("O"))] = reply.value
    assert got == {i: str(i % 10).encode() for i in range(50)}
