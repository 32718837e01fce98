"""Server processes for the benchmark: start on 127.0.0.1, wait until healthy, measure the
workers' memory, stop. Every process is started here in its own session and stopped by its id."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def postgres_url(asked: bool) -> str | None:
    """DATABASE_URL when it names a PostgreSQL server; when `asked` also the test suite's
    OPTFLOW_TEST_POSTGRES_URL (what scripts/with-postgres.sh exports)."""
    for url in (os.environ.get("DATABASE_URL"), os.environ.get("OPTFLOW_TEST_POSTGRES_URL") if asked else None):
        if url and url.startswith(("postgres://", "postgresql")):
            return url
    return None


def rerun_under_postgres(module: str, argv: list[str] | None) -> int:
    """Run `python -m module argv` again inside scripts/with-postgres.sh (a throwaway PostgreSQL
    server, stopped when it ends); returns 2 when that has already been tried and failed."""
    if os.environ.get("OPTFLOW_BENCH_UNDER_POSTGRES"):
        print("no PostgreSQL could be started (see above)", file=sys.stderr)
        return 2
    os.environ["OPTFLOW_BENCH_UNDER_POSTGRES"] = "1"
    script = REPO / "scripts" / "with-postgres.sh"
    os.execv("/bin/bash", ["bash", str(script), sys.executable, "-m", module,
                           *(sys.argv[1:] if argv is None else argv)])


def find_or_install(command: str, packages: tuple[str, ...]) -> str | None:
    """`command`'s path (sbin included); when it is missing and we may (root with apt-get), the
    first of Debian's `packages` that provides it is installed, the package lists refreshed once
    if none could be."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(command, path=search)
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print(f"installing {command} from Debian's packages...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for refresh in (False, True):
        if refresh:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False, timeout=300)
        for package in packages:
            subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, check=False,
                           timeout=300)
            found = shutil.which(command, path=search)
            if found:
                return found
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    peak_rss_mb: float = 0.0
    _sampler: threading.Thread | None = field(default=None, repr=False)
    _sampling: threading.Event = field(default_factory=threading.Event, repr=False)

    def workers(self) -> list[int]:
        """The server's worker processes: the descendants of the main process that hold its
        listening socket (not multiprocessing's resource tracker or Sanic's manager process)."""
        port = int(self.base_url.rsplit(":", 1)[1])
        sockets = {f"socket:[{inode}]" for inode in listening_inodes(port)}
        return [pid for pid in descendants(self.process.pid) if open_files(pid) & sockets]

    def workers_rss_mb(self) -> float:
        return sum(rss_mb(pid) for pid in self.workers())

    @contextlib.contextmanager
    def sampling_rss(self, every: float = 0.25) -> Iterator[None]:
        """Track the peak of the workers' summed RSS while the block runs."""
        self._sampling.clear()

        def sample() -> None:
            while not self._sampling.wait(every):
                self.peak_rss_mb = max(self.peak_rss_mb, self.workers_rss_mb())

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()
        try:
            yield
        finally:
            self._sampling.set()
            self._sampler.join()
            self.peak_rss_mb = max(self.peak_rss_mb, self.workers_rss_mb())

    def kill(self) -> None:
        """SIGKILL the whole server at once, as a crash would: what it acknowledged must already
        be on disk."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(name: str, command: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None, port: int, timeout: float = 60.0) -> ServerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    server = ServerProcess(name, process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited during start-up:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                # Both workers answer once each has bound; give the second one a moment.
                time.sleep(0.5)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{name} did not answer /healthz within {timeout:.0f} s:\n"
                       f"{log_path.read_text(errors='replace')[-3000:]}")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tcp_sockets() -> Iterator[tuple[int, int, str, str]]:
    """(local port, remote port, state, inode) of every TCP socket (IPv4 and IPv6); state `0A`
    is LISTEN, `01` ESTABLISHED."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            yield (int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16), fields[3],
                   fields[9])


def listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on `port`."""
    return {inode for local, _, state, inode in tcp_sockets() if local == port and state == "0A"}


def open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:
        return set()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
