"""Start and stop server processes that a test owns (murakumo or Debian memcached).

Tests that need their own process (crash and restart, limits such as
--max-connections or --idle-timeout, or an RSS check on a known pid) get it from
here. The same test can run against Debian's memcached with the equivalent
options, which is how the suites prove that they test the protocol and not our
own implementation's quirks.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from pathlib import Path

from mcwire import free_port, wait_for_port

START_TIMEOUT = 30.0


@functools.lru_cache(maxsize=None)
def _dev_help(binary: str) -> str:
    """The text of ``murakumo dev --help``, to pass only flags the binary knows."""
    try:
        out = subprocess.run([binary, "dev", "--help"], capture_output=True, text=True,
                             timeout=30, check=False)
    except OSError:
        return ""
    return out.stdout + out.stderr


class ManagedServer:
    """One server process on a free loopback port, with its log and data dir."""

    def __init__(self, kind: str, binary: str, workdir: Path, *, data_dir: Path | None = None,
                 sync: str | None = None, max_connections: int | None = None,
                 idle_timeout: int | None = None, max_item_size: int | None = None,
                 cache_mb: int | None = None, sync_interval_ms: int | None = None,
                 enable_shutdown: bool = False, storage: str | None = None):
        if kind not in ("murakumo", "memcached"):
            raise ValueError(f"unknown server kind {kind!r}")
        self.kind = kind
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.sync = sync
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.max_item_size = max_item_size
        self.cache_mb = cache_mb
        self.sync_interval_ms = sync_interval_ms
        self.enable_shutdown = enable_shutdown
        # murakumo's --storage; memcached only ever keeps items in memory.
        self.storage = storage
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log_path = self.workdir / "server.log"

    # -- lifecycle ---------------------------------------------------------
    def _argv(self) -> list[str]:
        if self.kind == "memcached":
            argv = [self.binary, "-U", "0", "-l", self.host, "-p", str(self.port)]
            if os.geteuid() == 0:
                argv += ["-u", "nobody"]
            if self.max_connections is not None:
                argv += ["-c", str(self.max_connections)]
            if self.idle_timeout is not None:
                argv += ["-o", f"idle_timeout={self.idle_timeout}"]
            if self.max_item_size is not None:
                argv += ["-I", str(self.max_item_size)]
            if self.cache_mb is not None:
                argv += ["-m", str(self.cache_mb)]
            if self.enable_shutdown:
                argv += ["-A"]
            return argv
        argv = [self.binary, "dev", "--data-dir", str(self.data_dir),
                "--listen", f"{self.host}:{self.port}"]
        if "--http" in _dev_help(self.binary):
            # dev may serve HTTP on a fixed default port; several test servers
            # run at once, so each gets its own.
            argv += ["--http", f"{self.host}:{free_port()}"]
        if self.storage is not None:
            argv += ["--storage", self.storage]
        if self.sync is not None:
            argv += ["--sync", self.sync]
        if self.max_connections is not None:
            argv += ["--max-connections", str(self.max_connections)]
        if self.idle_timeout is not None:
            argv += ["--idle-timeout", str(self.idle_timeout)]
        if self.max_item_size is not None:
            argv += ["--max-item-size", str(self.max_item_size)]
        if self.cache_mb is not None:
            argv += ["--cache-mb", str(self.cache_mb)]
        if self.sync_interval_ms is not None:
            argv += ["--sync-interval-ms", str(self.sync_interval_ms)]
        if self.enable_shutdown:
            argv += ["--enable-shutdown"]
        return argv

    def start(self) -> "ManagedServer":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("server already running")
        last: Exception | None = None
        for _attempt in range(2):  # a second try covers losing the free port to a race
            self.port = free_port()
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n=== start #{self.starts}: {' '.join(self._argv())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(self._argv(), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, cwd=self.workdir)
            try:
                wait_for_port(self.host, self.port, START_TIMEOUT, self.proc)
                return self
            except (RuntimeError, TimeoutError) as err:
                last = err
                self._reap(signal.SIGKILL)
        raise RuntimeError(f"{self.kind} did not start: {last}\n{self.log_tail()}")

    def _reap(self, sig: int, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill9(self) -> None:
        """SIGKILL: the crash the durability tests are about."""
        self._reap(signal.SIGKILL)

    def terminate(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for a graceful exit; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"{self.kind} ignored SIGTERM for {timeout}s\n{self.log_tail()}")

    def stop(self) -> None:
        """Best-effort teardown (SIGTERM, then SIGKILL)."""
        self._reap(signal.SIGTERM, timeout=15)

    # -- state --------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def addr(self) -> tuple[str, int]:
        return self.host, self.port

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "--- server log tail ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
