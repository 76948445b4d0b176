#!/usr/bin/env python3
"""Control-plane benchmark: many products on one server.

For each `provisionctl` given (this build, and an earlier one to compare with), on a fresh
data directory each time:

  * apply N products (file sinks on an empty topic) in one request, and in 100 requests;
    time until every product is Live (capped: an old build may not get there);
  * change one product: the time of the request, and until it is Live at its new generation;
  * bytes the server writes to disk (`write_bytes` of /proc/PID/io: what reaches the block
    layer, in pages, including the record, the output line and the sink's checkpoint) while
    one product's status changes, with N products and with 10 (a status update must not cost
    more with more products). Not `wchar`, which also counts the runtime's 8-byte eventfd
    wake-ups, more of them the more products wait;
  * the server's peak RSS (VmHWM), and how long SIGTERM takes to end it.

    control_plane.py PRODUCTS LIVE_CAP_SECONDS NAME=PROVISIONCTL [NAME=PROVISIONCTL ...]
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

DATASETS = """apiVersion: provision/v1
kind: Dataset
metadata: {name: orders}
spec:
  key: order_id
  time: placed_at
  schema: {order_id: string, amount: decimal, region: string, placed_at: timestamp}
---
apiVersion: provision/v1
kind: Dataset
metadata: {name: solo}
spec:
  key: order_id
  schema: {order_id: string, amount: decimal}
"""


def product(name, source="orders", threshold=1):
    return (f"apiVersion: provision/v1\nkind: DataProduct\nmetadata: {{name: {name}, team: bench}}\n"
            f"spec:\n  from: {source}\n  where: amount > {threshold}\n  sink: {{file: {{path: bench/{name}.jsonl}}}}\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, work):
        self.binary = binary
        self.data = tempfile.mkdtemp(dir=work)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.data + ".log", "w")
        # --dev (no tokens) where the build has it; an earlier build without it has no auth.
        help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True).stdout
        dev = ["--dev"] if "--dev" in help_text else []
        self.process = subprocess.Popen([binary, "serve", "--data-dir", self.data, "--listen", f"127.0.0.1:{self.port}",
                                         "--log-level", "warning"] + dev, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def request(self, method, path, body=None, timeout=600):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")

    def get(self, path):
        return self.request("GET", path)

    def apply(self, documents):
        # Files of at most 1,000 documents each (a spec file is limited to 1 MiB).
        files = [{"name": f"bench-{i}.yaml", "content": "\n---\n".join(documents[i:i + 1000])}
                 for i in range(0, len(documents), 1000)]
        return self.request("POST", "/v1/apply", {"files": files, "dryRun": False, "prune": False})

    def proc(self, name):
        with open(f"/proc/{self.process.pid}/{name}") as f:
            return f.read()

    def written_bytes(self):
        return int(next(line for line in self.proc("io").splitlines() if line.startswith("write_bytes:")).split()[1])

    def peak_rss_mib(self):
        line = next(line for line in self.proc("status").splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def list_products(self):
        """Every product, following `Provision-Continue` (an earlier build sends all at once)."""
        products, token = [], None
        while True:
            path = "/v1/products" + (f"?limit=5000&continue={token}" if token else "?limit=5000")
            with urllib.request.urlopen(self.url + path, timeout=600) as response:
                products += json.loads(response.read())
                token = response.headers.get("Provision-Continue")
            if not token:
                return products

    def live_count(self):
        return sum(1 for p in self.list_products() if p["status"]["phase"] == "Live")

    def stop(self):
        """SIGTERM; seconds until it exited (killed after 60 s: returns None)."""
        begin = time.time()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
            return time.time() - begin
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


def wait_all_live(server, count, cap):
    """Seconds until `count` products are Live, or (None, how many were) at the cap."""
    begin = time.time()
    while True:
        live = server.live_count()
        if live >= count:
            return time.time() - begin, live
        if time.time() - begin > cap:
            return None, live
        time.sleep(1)


def wait_product(server, name, condition, cap=120):
    begin = time.time()
    while time.time() - begin < cap:
        try:
            if condition(server.get(f"/v1/products/{name}")):
                return time.time() - begin
        except OSError:
            pass
        time.sleep(0.02)
    return None


def status_update_bytes(server):
    """Bytes written while one product's status changes: one record produced to the topic
    only `solo` reads, then long enough for status to be written (the resync is 2 s)."""
    before_records = server.get("/v1/products/solo")["status"]["recordsWritten"]
    time.sleep(6)  # let earlier writes (the last status flush, the changed product's clean-up) finish
    before = server.written_bytes()
    data = json.dumps({"order_id": f"o-{time.time()}", "amount": 5}).encode()
    request = urllib.request.Request(server.url + "/v1/topics/solo/records?key=order_id", data=data, method="POST",
                                     headers={"content-type": "application/x-ndjson"})
    urllib.request.urlopen(request, timeout=60).read()
    wait_product(server, "solo", lambda p: p["status"]["recordsWritten"] == before_records + 1)
    time.sleep(5)
    return server.written_bytes() - before


def scenario(binary, work, products, requests, cap):
    server = Server(binary, work)
    server.apply([DATASETS])
    names = [f"p-{i:05d}" for i in range(products)]
    documents = [product(name) for name in names] + [product("solo", source="solo")]
    begin = time.time()
    per_request = (len(documents) + requests - 1) // requests
    for start in range(0, len(documents), per_request):
        server.apply(documents[start:start + per_request])
    applied = time.time() - begin
    to_live, live = wait_all_live(server, len(documents), cap)
    result = {"apply_seconds": applied, "live_seconds": to_live, "live": live, "total": len(documents)}
    if requests == 1:
        begin = time.time()
        server.apply([product(names[len(names) // 2], threshold=2)])
        result["change_request_seconds"] = time.time() - begin
        result["change_live_seconds"] = wait_product(
            server, names[len(names) // 2],
            lambda p: p["status"]["phase"] == "Live" and p["status"]["observedGeneration"] == p["metadata"]["generation"] == 2)
        result["status_update_bytes"] = status_update_bytes(server)
        begin = time.time()
        server.list_products()
        result["list_seconds"] = time.time() - begin
    result["peak_rss_mib"] = server.peak_rss_mib()
    result["sigterm_seconds"] = server.stop()
    return result


def small_status_bytes(binary, work):
    server = Server(binary, work)
    server.apply([DATASETS])
    server.apply([product(f"p-{i:05d}") for i in range(9)] + [product("solo", source="solo")])
    wait_all_live(server, 10, 60)
    written = status_update_bytes(server)
    server.stop()
    return written


def fmt(value, unit="s"):
    if value is None:
        return "—"
    return f"{value:.2f} {unit}" if unit == "s" else f"{value:,.0f} {unit}"


def main():
    products, cap = int(sys.argv[1]), float(sys.argv[2])
    builds = [argument.split("=", 1) for argument in sys.argv[3:]]
    work = tempfile.mkdtemp(prefix="provision-bench-control-")
    results = {}
    for name, binary in builds:
        print(f"{name}: {products} products in one request", flush=True)
        one = scenario(binary, work, products, 1, cap)
        print(f"{name}: {products} products in 100 requests", flush=True)
        hundred = scenario(binary, work, products, 100, cap)
        print(f"{name}: status update with 10 products", flush=True)
        small = small_status_bytes(binary, work)
        results[name] = (one, hundred, small)
        print(json.dumps(results[name]), flush=True)
    print()
    print("| measure | " + " | ".join(name for name, _ in builds) + " |")
    print("|---|" + "---:|" * len(builds))

    def row(label, cell):
        print(f"| {label} | " + " | ".join(cell(results[name]) for name, _ in builds) + " |")

    def live(result):
        if result["live_seconds"] is None:
            return f"{result['live']:,} of {result['total']:,} Live after {cap:.0f} s"
        return fmt(result["live_seconds"])

    row(f"apply {products:,} products, one request", lambda r: fmt(r[0]["apply_seconds"]))
    row("… then until all are Live", lambda r: live(r[0]))
    row(f"apply {products:,} products, 100 requests", lambda r: fmt(r[1]["apply_seconds"]))
    row("… then until all are Live", lambda r: live(r[1]))
    row("change one product: the request", lambda r: fmt(r[0]["change_request_seconds"]))
    row("… until it is Live at its new generation", lambda r: fmt(r[0]["change_live_seconds"]))
    row(f"`GET /v1/products` with {products:,}", lambda r: fmt(r[0]["list_seconds"]))
    row(f"bytes written for one status update, {products:,} products", lambda r: fmt(r[0]["status_update_bytes"], "B"))
    row("bytes written for one status update, 10 products", lambda r: fmt(r[2], "B"))
    row("peak RSS (one request)", lambda r: fmt(r[0]["peak_rss_mib"], "MiB"))
    row("SIGTERM to exit (one request)", lambda r: fmt(r[0]["sigterm_seconds"]) if r[0]["sigterm_seconds"] is not None else "ignored (killed after 60 s)")
    if len(builds) == 2:
        (new, new_result), (old, old_result) = builds[0], builds[1]
        print()
        print(f"status update bytes, {products:,} products: {new} / {old} = "
              f"{results[new][0]['status_update_bytes'] / max(1, results[old][0]['status_update_bytes']):.4f}")


if __name__ == "__main__":
    main()
