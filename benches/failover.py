"""Failover time (BENCHMARKS.md, "High availability"): two nodes on one PostgreSQL, a client writing one transfer per request in a
loop through PuenteClient([a, b]); SIGKILL the leader; the time from the kill to the first
acknowledged write (on the new leader). Usage: failover.py PUENTE_BIN PG_URL WORKDIR LEASE_MS"""
import os, signal, subprocess, sys, time, uuid, threading, queue
from pathlib import Path
from puente_client import PuenteClient

binary, url, work, lease_ms = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
work.mkdir(parents=True, exist_ok=True)

def node(name):
    log = open(work / f"{name}.log", "wb")
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(work / name),
                          "--journal-url", url, "--node-id", name, "--lease-ms", lease_ms],
                         stdout=subprocess.PIPE, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    for raw in p.stdout:
        line = raw.decode().strip()
        if line.startswith("listening on "):
            threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
            return p, line.removeprefix("listening on ")
    raise SystemExit(f"{name} did not start")

a, a_addr = node("a")
b, b_addr = node("b")
key_file = work / "op.key"
subprocess.run([binary, "--server", a_addr, "participants", "bootstrap", "--key-file", str(key_file)], check=True,
               capture_output=True)
key = key_file.read_text().strip()
with PuenteClient([a_addr, b_addr], api_key=key, failover_wait=60) as c:
    c.create_participant("fintech-a")
    src = c.create_account("fintech-a", "USD").id
    dst = c.create_account("fintech-a", "USD").id
    for _ in range(200):
        c.transfer(src, dst, "USD", "0.01")
    a.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    c.transfer(src, dst, "USD", "0.01", id=str(uuid.uuid4()))
    failover_ms = (time.monotonic() - killed) * 1000
    assert c.addr == b_addr
    print(f"failover_ms={failover_ms:.0f} lease_ms={lease_ms}")
b.send_signal(signal.SIGKILL)
a.wait(); b.wait()
