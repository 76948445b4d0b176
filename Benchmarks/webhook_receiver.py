#!/usr/bin/env python3
"""A receiver that acknowledges at once and counts the records (GET returns the count). With --latency FILE it also writes, per record,
the milliseconds from the record's event time (set to the moment it was produced) to
receipt.

    webhook_receiver.py PORT [--latency FILE]
"""
import json
import socket
import sys
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import threading

port = int(sys.argv[1])
lock = threading.Lock()
received_records = 0
latency = open(sys.argv[3], "a", buffering=1) if len(sys.argv) > 3 and sys.argv[2] == "--latency" else None


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Answer in one segment, at once: http.server writes the head and the body apart, and
        # on a kept-alive connection Nagle's algorithm holds the body until the client's
        # delayed ACK (40 ms), which would cap any keep-alive client at 25 requests/s.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self):
        global received_records
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = time.time() * 1000
        # Provision's body, a CloudEvents batch, or one binary-mode event (its time a header).
        binary_time = self.headers.get("ce-time")
        batch = self.headers.get("Content-Type") == "application/cloudevents-batch+json"
        with lock:
            received_records += 1 if binary_time else body.count(b'"specversion"') if batch else body.count(b'{"id":')
        if latency:
            if binary_time:
                times = [binary_time]
            else:
                parsed = json.loads(body)
                times = [event["time"] for event in (parsed if batch else parsed["records"])]
            lines = []
            for stamp in times:
                sent = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
                lines.append(f"{received - sent:.1f}\n")
            latency.write("".join(lines))
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")


    def do_GET(self):
        # How many records arrived so far, to check that acknowledged means received.
        payload = str(received_records).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))


ThreadingHTTPServer(("127.0.0.1", port), Receiver).serve_forever()
