#!/usr/bin/env python3
"""An HTTP proxy for the tests: forwards every request to an upstream server, but for
SECONDS from the first `_bulk` request on answers every other `_bulk` request with 429 (and a
Retry-After) or 503, as an overloaded cluster does. Writes how many requests it refused to
STATS_PATH.

    flaky_proxy.py PORT UPSTREAM SECONDS STATS_PATH [BODY_LOG]

With BODY_LOG, every `_bulk` request body is appended to it as received.
"""
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, upstream, seconds, stats_path = int(sys.argv[1]), sys.argv[2].rstrip("/"), float(sys.argv[3]), sys.argv[4]
body_log = open(sys.argv[5], "ab", buffering=0) if len(sys.argv) > 5 else None
started = None  # when the first _bulk request arrives: the failing window starts there
lock = threading.Lock()
bulk_requests = 0
refused = 0


def save_stats():
    with open(stats_path + ".tmp", "w") as out:
        out.write(str(refused))
    import os
    os.replace(stats_path + ".tmp", stats_path)


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        global bulk_requests, refused
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        global started
        if "/_bulk" in self.path:
            with lock:
                if started is None:
                    started = time.monotonic()
                if body_log and body:
                    body_log.write(body)
        if "/_bulk" in self.path and time.monotonic() - started < seconds:
            with lock:
                bulk_requests += 1
                refuse = bulk_requests % 2 == 1
                if refuse:
                    refused += 1
                    save_stats()
                    status = 429 if refused % 2 == 1 else 503
            if refuse:
                payload = b'{"error":{"type":"es_rejected_execution_exception","reason":"injected by the test proxy"},"status":%d}' % status
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
        request = urllib.request.Request(upstream + self.path, data=body, method=self.command)
        for name in ("Content-Type", "Authorization", "Content-Encoding"):
            if self.headers.get(name):
                request.add_header(name, self.headers.get(name))
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, payload, content_type = response.status, response.read(), response.headers.get("Content-Type")
        except urllib.error.HTTPError as error:
            status, payload, content_type = error.code, error.read(), error.headers.get("Content-Type")
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward


save_stats()
ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
