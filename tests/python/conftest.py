"""Shared options and fixtures for murakumo's protocol, bad-input and crash suites.

Two ways to run:

* ``--target murakumo`` (default): ``--server`` is a running ``murakumo dev`` and
  ``--murakumo-bin`` starts extra murakumo processes for crash, restart and limit
  tests.
* ``--target memcached``: ``--server`` is Debian's memcached. Tests that start
  their own process start memcached with the same limits instead, and tests that
  only make sense for murakumo (persistence) are skipped. This proves that the
  suites test memcached's protocol and not our implementation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mcwire import Conn, parse_hostport, process_alive
from servers import ManagedServer

REPO_ROOT = Path(__file__).resolve().parents[2]


def pytest_addoption(parser):
    group = parser.getgroup("murakumo")
    group.addoption("--server", default=None,
                    help="HOST:PORT of a running server to test (default: start one)")
    group.addoption("--target", choices=("murakumo", "memcached"), default="murakumo",
                    help="what --server is; 'memcached' proves the suites against memcached")
    group.addoption("--murakumo-bin", default=None,
                    help="murakumo binary for tests that start their own process "
                         "(default: target/release/murakumo)")
    group.addoption("--memcached-bin", default=shutil.which("memcached") or "memcached",
                    help="memcached binary used with --target memcached")


@pytest.fixture(scope="session")
def target(request) -> str:
    return request.config.getoption("--target")


@pytest.fixture(scope="session")
def murakumo_bin(request, target) -> str | None:
    """Path of the murakumo binary; a missing binary fails murakumo runs loudly."""
    if target != "murakumo":
        return None
    path = request.config.getoption("--murakumo-bin") or str(
        REPO_ROOT / "target" / "release" / "murakumo")
    if not os.access(path, os.X_OK):
        pytest.fail(f"murakumo binary {path} not found; build it or pass --murakumo-bin")
    return path


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory, target, murakumo_bin, request):
    """Start servers of the target kind with given limits; all stopped at session end."""
    started: list[ManagedServer] = []
    memcached_bin = request.config.getoption("--memcached-bin")

    def make(**opts) -> ManagedServer:
        binary = murakumo_bin if target == "murakumo" else memcached_bin
        workdir = tmp_path_factory.mktemp(f"{target}-server")
        srv = ManagedServer(target, binary, workdir, **opts)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def murakumo_factory(tmp_path_factory, target, murakumo_bin):
    """Like ``server_factory`` but murakumo only (persistence tests)."""
    if target != "murakumo":
        pytest.skip("needs murakumo's persistence; memcached keeps nothing across restarts")
    started: list[ManagedServer] = []

    def make(data_dir: Path | None = None, **opts) -> ManagedServer:
        workdir = tmp_path_factory.mktemp("murakumo")
        srv = ManagedServer("murakumo", murakumo_bin, workdir, data_dir=data_dir, **opts)
        started.append(srv)
        return srv.start()

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def server_addr(request, server_factory) -> tuple[str, int]:
    """The server under test: --server, or one started for this session."""
    value = request.config.getoption("--server")
    if value:
        return parse_hostport(value)
    return server_factory().addr


@pytest.fixture(scope="session")
def server_pid(server_addr) -> int:
    """Pid of the server under test (from ``stats``), to check it is still alive."""
    with Conn(*server_addr) as c:
        pid = int(c.stats()["pid"])
    assert process_alive(pid), f"stats pid {pid} is not a live local process"
    return pid


@pytest.fixture
def connect(server_addr):
    """Open connections to the server under test; all closed after the test."""
    conns: list[Conn] = []

    def make(timeout: float = 10.0) -> Conn:
        c = Conn(*server_addr, timeout=timeout)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


@pytest.fixture
def conn(connect) -> Conn:
    return connect()
