"""Two nodes on one journal of record in a throwaway PostgreSQL 15 (initdb/pg_ctl from
/usr/lib/postgresql/15/bin, which `scripts/test-deps` installs): a client given both addresses
follows the leader, a standby names the leader, and writes carry on through a SIGKILL of the
leader, exactly once."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import pytest

from puente_client import PuenteClient, PuenteError

from conftest import STARTUP_SECONDS, _binary, _log_tail

PG_BIN = Path(os.environ.get("PUENTE_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(args: list[str]) -> list[str]:
    """initdb refuses root: run PostgreSQL's tools as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str]) -> None:
    done = subprocess.run(_as_postgres(args), capture_output=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


@pytest.fixture(scope="module")
def postgres():
    if not (PG_BIN / "initdb").is_file():
        pytest.fail(f"{PG_BIN}/initdb is missing: scripts/test-deps installs postgresql-15")
    # Directly under /tmp: the postgres user must reach it (pytest's own tmp dirs are 0700 root).
    base = Path(tempfile.mkdtemp(prefix="puente-pytest-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    data, port = base / "data", _free_port()
    try:
        _run([str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"])
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on"
        _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"])
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


class Node:
    def __init__(self, base: Path, url: str, name: str) -> None:
        self.log = base / f"{name}.log"
        with open(self.log, "wb") as stderr:
            self.process = subprocess.Popen(
                [str(_binary()), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(base / name),
                 "--journal-url", url, "--node-id", name, "--lease-ms", "1000"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                lines.put(raw.decode(errors="replace").rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if line is None:
                pytest.fail(f"node {name} exited\n{_log_tail(self.log)}")
            if line.startswith("listening on "):
                self.addr = line.removeprefix("listening on ").strip()
                return

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


def test_a_cluster_client_follows_the_leader_through_a_sigkill(postgres: str, tmp_path: Path) -> None:
    a = Node(tmp_path, postgres, "a")
    b = Node(tmp_path, postgres, "b")
    try:
        key_file = tmp_path / "operator.key"
        subprocess.run(
            [str(_binary()), "--server", a.addr, "participants", "bootstrap", "--key-file", str(key_file)],
            check=True,
            capture_output=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PUENTE_API_KEY")},
        )
        key = key_file.read_text().strip()

        with PuenteClient(b.addr, api_key=key) as standby:
            assert standby.health("puente.v1.Leader") == "NOT_SERVING"
            # A standby follows within about one poll (50 ms): wait until it knows the key.
            deadline = time.monotonic() + 10
            while True:
                try:
                    standby.whoami()
                    break
                except PuenteError:
                    assert time.monotonic() < deadline, "the standby never learned the operator's key"
                    time.sleep(0.02)
            with pytest.raises(PuenteError) as refused:
                standby.create_account("fintech-a", "USD")
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
            assert refused.value.reason == "NOT_LEADER"
            assert refused.value.metadata["leader_address"] == a.addr

        # Given both nodes, listing the standby first: the client finds the leader itself.
        with PuenteClient([b.addr, a.addr], api_key=key, failover_wait=20) as client:
            client.create_participant("fintech-a")
            funding = client.create_account("fintech-a", "USD").id
            wallet = client.create_account("fintech-a", "USD").id
            assert client.addr == a.addr
            ids = [str(uuid.uuid4()) for _ in range(20)]
            for i, transfer_id in enumerate(ids):
                if i == 10:
                    a.stop(signal.SIGKILL)  # the next write goes to the standby, which leads
                client.transfer(funding, wallet, "USD", "1.00", id=transfer_id)
            assert client.addr == b.addr
            # Every transfer exactly once, and a retry of one is its first outcome.
            assert client.get_account(wallet).posted_balance == "20.00"
            again = client.transfer(funding, wallet, "USD", "1.00", id=ids[0])
            assert again.replayed
            assert client.get_account(wallet).posted_balance == "20.00"
            assert client.health("puente.v1.Leader") == "SERVING"
    finally:
        for node in (a, b):
            node.stop(signal.SIGKILL)
