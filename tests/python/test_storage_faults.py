"""Storage faults on a real disk: the node never serves a wrong value or reports an
acknowledged write missing; it answers memcached's SERVER_ERROR instead, and says why.

- A full disk: the data directory is a tmpfs of a few MiB that the test mounts itself,
  so the disk really fills (``No space left on device`` from the kernel, in the middle of
  fjall's journal writes and memtable flushes) without touching the machine's own disks.
  Once there is room again, a restart serves every write that was acknowledged. Mounting
  needs root, which the test command has; elsewhere that test is skipped.
- A corrupt table file: bytes flipped in fjall's largest table while the node is down are
  caught by fjall's block checksums when read.
- A damaged journal: bytes flipped in the middle of it make the node refuse to start,
  saying why, instead of starting without the writes recorded after the damage.
- A power cut: the data directory is on ``lossyfs.py``, a FUSE filesystem that forgets
  every write not yet fsynced when told to. Under ``--sync always`` nothing acknowledged
  is lost, also after fjall has flushed memtables to tables, and keys overwritten
  through flushes and blob rewrites keep their last acknowledged version; under the default
  policy nothing acknowledged a second before the cut is lost; and with fsync put off,
  writes are lost, which shows that the filesystem really forgets.

Murakumo only: memcached writes nothing to disk.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcwire import Conn, ServerClosed
from servers import wait_until
from test_atomicity import OverwriteLoad, check_overwrites
from test_crash import check_acked, run_load_then

DISK_MIB = 24
VALUE_LEN = 10_000
# Far more than DISK_MIB holds, so that the disk fills; the loop stops at the first
# refusals well before this.
MAX_WRITES = 20 * DISK_MIB * 1024 * 1024 // VALUE_LEN
REFUSALS_TO_SEE = 20


def value_for(key: str, length: int = VALUE_LEN) -> bytes:
    """A value derived from the key, so that a mix-up shows."""
    digest = hashlib.sha256(key.encode()).digest()
    return (digest * (length // len(digest) + 1))[:length]


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (the test command runs as root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs", str(mount_point)],
                   check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(addr: tuple[str, int]) -> tuple[list[str], list[bytes]]:
    """Writes new keys until the server refuses ``REFUSALS_TO_SEE`` of them; returns the
    acknowledged keys and the refusals."""
    acked: list[str] = []
    refusals: list[bytes] = []
    with Conn(*addr, timeout=30) as conn:
        for n in range(MAX_WRITES):
            key = f"full_{n}"
            try:
                reply = conn.set(key, value_for(key))
            except ServerClosed:
                pytest.fail(f"the server closed the connection after {len(acked)} writes")
            if reply == b"STORED":
                acked.append(key)
            else:
                refusals.append(reply)
                if len(refusals) >= REFUSALS_TO_SEE:
                    break
    return acked, refusals


def acked_values_are_exact_or_refused(addr: tuple[str, int], acked: list[str],
                                      value_len: int = VALUE_LEN) -> int:
    """Every acknowledged key is served with its value, or the read is refused with
    SERVER_ERROR: never a miss and never another value. Returns how many were served."""
    served = 0
    with Conn(*addr, timeout=30) as conn:
        for key in acked:
            conn.send(f"get {key}\r\n")
            line = conn.readline()
            if line.startswith(b"SERVER_ERROR"):
                continue
            assert line.startswith(b"VALUE "), f"{key}: {line!r} (an acknowledged write is lost)"
            data = conn.read_block(int(line.split(b" ")[3]))
            assert conn.readline() == b"END"
            assert data == value_for(key, value_len), f"{key}: wrong value"
            served += 1
    return served


def table_files(data_dir: Path) -> list[Path]:
    """fjall's table files (what a memtable flush or a compaction writes), smallest first."""
    found = (p for p in data_dir.rglob("*") if p.is_file() and p.parent.name == "tables")
    return sorted(found, key=lambda p: p.stat().st_size)


def flip_bytes(path: Path, offsets: list[int], length: int = 16) -> None:
    """Inverts ``length`` bytes at each offset of ``path``: damage no checksum can miss."""
    with open(path, "r+b") as f:
        for offset in offsets:
            f.seek(offset)
            chunk = f.read(length)
            f.seek(offset)
            f.write(bytes(b ^ 0xFF for b in chunk))


def no_panic(srv) -> None:
    log = srv.log_path.read_text(errors="replace")
    assert "panicked" not in log, srv.log_tail()


def test_a_full_disk_refuses_writes_and_loses_none(small_disk, murakumo_factory):
    srv = murakumo_factory(data_dir=small_disk / "data")
    with Conn(*srv.addr) as conn:
        assert conn.stats()["murakumo_storage_ok"] == "1"
    acked, refusals = fill(srv.addr)
    assert len(acked) >= 100, f"only {len(acked)} writes fit on {DISK_MIB} MiB"
    assert len(refusals) == REFUSALS_TO_SEE, f"the disk never filled after {len(acked)} writes"
    odd = [r for r in refusals if not r.startswith(b"SERVER_ERROR ")]
    assert not odd, f"a full disk must answer SERVER_ERROR, not {odd[:3]}"
    assert srv.alive(), srv.log_tail()
    # The operator can tell why: the reply names storage, and the log has the cause.
    assert b"storage" in refusals[0], refusals[0]
    log = srv.log_path.read_text(errors="replace")
    assert "No space left on device" in log and "storage failure" in log, srv.log_tail()
    with Conn(*srv.addr) as conn:
        assert conn.cmd("version").startswith(b"VERSION "), "the node stopped answering"
        assert conn.stats()["murakumo_storage_ok"] == "0", "monitoring cannot see the failure"
    acked_values_are_exact_or_refused(srv.addr, acked)
    # It stops on SIGTERM (with a failure status: its storage failed), without a panic.
    assert srv.terminate(timeout=30) != 0, srv.log_tail()
    no_panic(srv)

    # Restarted on the same, still full disk, it either refuses to start and says why, or
    # serves exactly what it holds.
    try:
        srv.start()
    except RuntimeError:
        log = srv.log_path.read_text(errors="replace")
        assert "No space left on device" in log, srv.log_tail()
    else:
        acked_values_are_exact_or_refused(srv.addr, acked)
        srv.terminate(timeout=30)
    no_panic(srv)

    # With room again, every acknowledged write is there and writes are taken again.
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    srv.start()
    assert acked_values_are_exact_or_refused(srv.addr, acked) == len(acked), srv.log_tail()
    with Conn(*srv.addr) as conn:
        assert conn.set("after", "room again") == b"STORED", srv.log_tail()
    assert srv.terminate(timeout=30) == 0, srv.log_tail()
    no_panic(srv)


# Enough 1 KB items to fill the 4 MiB write buffer that --cache-mb 16 leaves the engine
# twice over, so that fjall flushes them to table files.
CORRUPT_ITEMS = 12_000
CORRUPT_VALUE_LEN = 1000


def test_a_corrupt_table_is_refused_never_served(murakumo_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = murakumo_factory(data_dir=data_dir, cache_mb=16)
    keys = [f"corrupt_{n}" for n in range(CORRUPT_ITEMS)]
    with Conn(*srv.addr, timeout=60) as conn:
        for i in range(0, len(keys), 200):
            conn.send(b"".join(f"set {k} 0 0 {CORRUPT_VALUE_LEN} noreply\r\n".encode()
                               + value_for(k, CORRUPT_VALUE_LEN) + b"\r\n"
                               for k in keys[i:i + 200]))
        assert conn.cmd("mn") == b"MN"
    assert srv.terminate(timeout=30) == 0, srv.log_tail()

    tables = table_files(data_dir)
    assert tables, f"fjall wrote no table file under {data_dir}: nothing to corrupt"
    largest: Path = tables[-1]
    size = largest.stat().st_size
    assert size > 1024 * 1024, f"the largest table is only {size} bytes"
    flip_bytes(largest, [size // 4, size // 2, 3 * size // 4])

    try:
        srv.start()
    except RuntimeError:
        log = srv.log_path.read_text(errors="replace")
        assert "panicked" not in log and "hecksum" in log, srv.log_tail()
        return
    served = acked_values_are_exact_or_refused(srv.addr, keys, CORRUPT_VALUE_LEN)
    assert served < len(keys), "every key was served from a table with three corrupt blocks"
    log = srv.log_path.read_text(errors="replace")
    assert "hecksum" in log and "storage failure" in log, srv.log_tail()
    srv.terminate(timeout=30)
    no_panic(srv)


JOURNAL_ITEMS = 3000


def test_a_damaged_journal_refuses_to_start_rather_than_drop_writes(murakumo_factory, tmp_path):
    data_dir = tmp_path / "data"
    srv = murakumo_factory(data_dir=data_dir)
    # Few enough to stay in the journal and the memtable: nothing is in a table yet.
    keys = [f"journal_{n}" for n in range(JOURNAL_ITEMS)]
    with Conn(*srv.addr, timeout=60) as conn:
        for key in keys:
            assert conn.set(key, value_for(key, CORRUPT_VALUE_LEN)) == b"STORED"
    assert srv.terminate(timeout=30) == 0, srv.log_tail()

    journals = [p for p in data_dir.rglob("*.jnl") if p.is_file()]
    assert journals, f"no fjall journal under {data_dir}"
    journal = max(journals, key=lambda p: p.stat().st_size)
    written = len(journal.read_bytes().rstrip(b"\0"))
    assert written > JOURNAL_ITEMS * CORRUPT_VALUE_LEN, f"the journal holds only {written} bytes"
    flip_bytes(journal, [written // 2])

    try:
        srv.start()
    except RuntimeError:
        log = srv.log_path.read_text(errors="replace")
        assert "journal is damaged" in log and "panicked" not in log, srv.log_tail()
        return
    # Had it started, it would have to serve all of them or refuse, not drop the tail.
    acked_values_are_exact_or_refused(srv.addr, keys, CORRUPT_VALUE_LEN)
    srv.terminate(timeout=30)
    pytest.fail("the node started on a journal damaged in the middle")


class LossyDisk:
    """``lossyfs.py`` mounted over a backing directory, for one test."""

    def __init__(self, root: Path):
        self.backing = root / "backing"
        self.mount_point = root / "mnt"
        self.backing.mkdir()
        self.mount_point.mkdir()
        self.log = root / "lossyfs.log"
        script = Path(__file__).with_name("lossyfs.py")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(self.backing), str(self.mount_point)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if not wait_until(self.mounted, timeout=20):
            self.close()
            pytest.fail(f"lossyfs did not mount: {self.log.read_text(errors='replace')}")

    def mounted(self) -> bool:
        with open("/proc/mounts") as mounts:
            return any(line.split()[1] == str(self.mount_point) for line in mounts)

    def power_cut(self) -> None:
        """Forgets every write not yet fsynced (the process above must be dead already)."""
        (self.mount_point / ".power-cut").write_bytes(b"now")

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mount_point)], check=False)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def lossy_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting the FUSE filesystem needs root (the test command runs as root)")
    if not os.path.exists("/dev/fuse"):
        pytest.skip("this kernel offers no FUSE (/dev/fuse)")
    disk = LossyDisk(tmp_path)
    yield disk
    disk.close()


def test_a_power_cut_under_sync_always_loses_no_acknowledged_write(lossy_disk, murakumo_factory):
    srv = murakumo_factory(data_dir=lossy_disk.mount_point / "data", sync="always")
    acked, maybe = run_load_then(srv, "cut", srv.kill9)
    lossy_disk.power_cut()
    srv.start()
    check_acked(srv.addr, acked, maybe)
    assert srv.terminate(timeout=30) == 0, srv.log_tail()


def test_a_power_cut_during_flushes_under_sync_always_loses_nothing(lossy_disk, murakumo_factory):
    # 4 MiB memtables (--cache-mb 16) and 10 KB values: fjall has flushed to table files
    # and rewritten its version manifest by the time of the cut (and may be flushing at
    # that moment), so the cut tests those writes' fsyncs too, not only the journal's.
    data_dir = lossy_disk.mount_point / "data"
    srv = murakumo_factory(data_dir=data_dir, sync="always", cache_mb=16)
    keys = [f"flush_{n}" for n in range(1_500)]
    with Conn(*srv.addr, timeout=60) as conn:
        for key in keys:
            assert conn.set(key, value_for(key)) == b"STORED"
    assert table_files(data_dir), "fjall flushed no memtable to a table file"
    srv.kill9()
    lossy_disk.power_cut()
    srv.start()
    assert acked_values_are_exact_or_refused(srv.addr, keys) == len(keys), srv.log_tail()
    assert srv.terminate(timeout=30) == 0, srv.log_tail()


def test_a_power_cut_under_overwrites_keeps_the_latest_acknowledged_version(
        lossy_disk, murakumo_factory):
    # Keys overwritten again and again with small and blob-sized values: the blob files
    # go stale and fjall's blob garbage collection rewrites them and deletes the old
    # ones, while memtables are flushed (4 MiB at --cache-mb 8). After the cut each key
    # must hold its last acknowledged version (or the one in flight), never an older one
    # and never a value whose blob was lost.
    data_dir = lossy_disk.mount_point / "data"
    srv = murakumo_factory(data_dir=data_dir, sync="always", cache_mb=8)
    found: dict[str, int] = {}
    for rnd in range(2):
        load = OverwriteLoad(srv.addr, f"cut{rnd}")
        load.run_then(4.0, srv.kill9)
        assert len(load.acked) == len(load.keys) * len(load.keys[0]), "too few writes"
        lossy_disk.power_cut()
        srv.start()
        found = check_overwrites(srv.addr, load, found)
    assert table_files(data_dir), "fjall flushed no memtable to a table file"
    assert srv.terminate(timeout=30) == 0, srv.log_tail()


# 10 KB values, enough for several memtable flushes at --cache-mb 16 (4 MiB memtables),
# so that the cut lands on table files and a journal that fjall has been working on, not
# on a fresh journal alone.
SYNCED_ITEMS = 7_000


def test_a_power_cut_keeps_what_the_default_policy_had_synced(lossy_disk, murakumo_factory):
    data_dir = lossy_disk.mount_point / "data"
    srv = murakumo_factory(data_dir=data_dir, cache_mb=16)
    keys = [f"synced_{n}" for n in range(SYNCED_ITEMS)]
    with Conn(*srv.addr, timeout=60) as conn:
        for key in keys:
            assert conn.set(key, value_for(key)) == b"STORED"
    assert table_files(data_dir), "fjall flushed no memtable to a table file"
    # The syncer fsyncs every 10 ms by default; a second is ample.
    time.sleep(1.0)
    srv.kill9()
    lossy_disk.power_cut()
    srv.start()
    assert acked_values_are_exact_or_refused(srv.addr, keys) == len(keys), srv.log_tail()
    assert srv.terminate(timeout=30) == 0, srv.log_tail()


def test_a_power_cut_with_fsync_put_off_loses_writes(lossy_disk, murakumo_factory):
    # The control: without an fsync the writes are only in the page cache, which a power
    # cut takes with it. If this kept them, the tests above would prove nothing.
    srv = murakumo_factory(data_dir=lossy_disk.mount_point / "data", sync_interval_ms=60_000)
    keys = [f"unsynced_{n}" for n in range(200)]
    with Conn(*srv.addr) as conn:
        for key in keys:
            assert conn.set(key, value_for(key, 100)) == b"STORED"
    srv.kill9()
    lossy_disk.power_cut()
    srv.start()
    with Conn(*srv.addr) as conn:
        lost = sum(conn.get(key) is None for key in keys)
    assert lost > 0, "a power cut kept writes that were never fsynced"
    srv.terminate(timeout=30)
