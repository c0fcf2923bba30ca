"""A real Puente server for the tests: `target/debug/puente serve` on a free port with a
temporary data directory and a personal-data key (holder requests need one), started once per
test session and stopped with SIGTERM."""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from puente_client import PuenteClient

REPO = Path(__file__).resolve().parents[2]
STARTUP_SECONDS = 30
SHUTDOWN_SECONDS = 30


class Server:
    def __init__(self, process: subprocess.Popen, addr: str, log: Path) -> None:
        self.process = process
        self.addr = addr
        self.log = log
        self.operator_key = ""
        self.binary = Path()
        #: The server's data directory.
        self.data_dir = Path()


def _binary() -> Path:
    binary = Path(os.environ.get("PUENTE_BIN", REPO / "target" / "debug" / "puente"))
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run `cargo build -p puente` (scripts/python-test does)")
    return binary


def _log_tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("puente")
    log = base / "server.log"
    # A fresh personal-data keyring (`<key_id>:<64 hex>`) through the environment; a key file
    # or key inherited from the caller's environment would conflict with it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUENTE_PII_KEY")}
    env["PUENTE_PII_KEY"] = f"py-test:{secrets.token_hex(32)}"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            [str(_binary()), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(base / "data")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,  # logs go to a file: a full pipe would block the server
            cwd=base,
            env={**env, "RUST_LOG": os.environ.get("RUST_LOG", "info"), "NO_COLOR": "1"},
        )
    # Read stdout on a thread (a bounded wait without fixed sleeps), and keep draining it.
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            lines.put(raw.decode(errors="replace").rstrip("\n"))
        lines.put(None)

    reader = threading.Thread(target=pump, name="puente-stdout", daemon=True)
    reader.start()

    def reap() -> None:
        reader.join(timeout=5)  # EOF follows the exit
        assert process.stdout is not None
        process.stdout.close()

    addr = None
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while addr is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no 'listening on' line within {STARTUP_SECONDS} s")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"server exited with {process.wait()} before listening")
            if line.startswith("listening on "):
                addr = line.removeprefix("listening on ").strip()
    except BaseException as error:
        process.kill()
        process.wait()
        reap()
        pytest.fail(f"server did not start: {error}\n--- server log ---\n{_log_tail(log)}")

    # The first operator of the new ledger, through the CLI (the key goes to a 0600 file).
    key_file = base / "operator.key"
    bootstrap = subprocess.run(
        [str(_binary()), "--server", addr, "participants", "bootstrap", "operator", "--key-file", str(key_file)],
        capture_output=True,
        timeout=STARTUP_SECONDS,
        env={k: v for k, v in os.environ.items() if not k.startswith("PUENTE_API_KEY")},
    )
    if bootstrap.returncode != 0:
        process.kill()
        process.wait()
        reap()
        pytest.fail(f"bootstrap failed: {bootstrap.stderr.decode(errors='replace')}")
    server = Server(process, addr, log)
    server.operator_key = key_file.read_text().strip()
    server.binary = _binary()
    server.data_dir = base / "data"
    yield server

    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=SHUTDOWN_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        reap()
        pytest.fail(f"server ignored SIGTERM for {SHUTDOWN_SECONDS} s\n{_log_tail(log)}")
    reap()
    assert code == 0, f"server exited with {code} after SIGTERM\n{_log_tail(log)}"


@pytest.fixture(scope="session")
def client(server: Server):
    with PuenteClient(server.addr, timeout=30, api_key=server.operator_key) as client:
        yield client
