#!/usr/bin/env python3
"""A webhook receiver for the tests that can be told to fail. Every request is logged as a
JSON line to LOG_PATH: {"idempotencyKey", "attempt", "status", "verified", "records": [[id, key, offset]]}.

    webhook_receiver.py PORT LOG_PATH [--fail-first N] [--throttle-every K] [--hang-every K --hang-seconds S]
                                      [--reject-marker TEXT] [--secret S] [--body-log PATH] [--header NAME]

--fail-first N       answer 500 to the first N attempts of every batch
--throttle-every K   answer 429 with Retry-After: 1 to the first attempt of every K-th batch
--hang-every K       do not answer the first attempt of every K-th batch for S seconds
--reject-marker T    answer 400 to a batch whose body contains T
--secret S           check the Provision-Signature header (HMAC-SHA256 of "<t>.<body>")
--body-log PATH      also append every request body, as received, one a line
--header NAME        log the value of this request header as "header"
--format F           the body's format: provision (default), cloudevents (a batch) or
                     cloudevents-binary, whose events are read with the cloudevents package
"""
import argparse
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("log")
parser.add_argument("--fail-first", type=int, default=0)
parser.add_argument("--throttle-every", type=int, default=0)
parser.add_argument("--hang-every", type=int, default=0)
parser.add_argument("--hang-seconds", type=float, default=0)
parser.add_argument("--reject-marker", default=None)
parser.add_argument("--secret", default=None)
parser.add_argument("--body-log", default=None)
parser.add_argument("--header", default=None)
parser.add_argument("--format", default="provision")
options = parser.parse_args()

lock = threading.Lock()
attempts = {}   # idempotency key -> attempts so far
batches = {}    # idempotency key -> its number, in order of first arrival
log = open(options.log, "a", buffering=1)
body_log = open(options.body_log, "ab", buffering=0) if options.body_log else None


def verify(headers, body):
    if options.secret is None:
        return None
    signature = headers.get("Provision-Signature") or ""
    parts = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(options.secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def records_of(headers, body):
    """[id, key, offset] of each record in the body, as the format gives them."""
    if options.format == "provision":
        return [[r["id"], r["key"], r["offset"]] for r in json.loads(body)["records"]]
    from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
    from cloudevents.core.formats.json import JSONFormat
    if options.format == "cloudevents":
        events = [JSONFormat().read(None, json.dumps(item)) for item in json.loads(body)]
    else:
        events = [from_binary_event(HTTPMessage(headers={k.lower(): v for k, v in headers.items()}, body=body))]
    return [[e.get_id(), e.get_subject(), int(e.get_extension("offset"))] for e in events]


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, payload=b"{}", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.headers.get("Idempotency-Key") or ""
        with lock:
            attempt = attempts.get(key, 0) + 1
            attempts[key] = attempt
            number = batches.setdefault(key, len(batches) + 1)
        if body_log:
            with lock:
                body_log.write(body.replace(b"\n", b" ") + b"\n")
        records = records_of(self.headers, body)
        verified = verify(self.headers, body)
        status, headers, payload = 200, (), b'{"ok":true}'
        if options.reject_marker and options.reject_marker.encode() in body:
            status, payload = 400, b'{"error":"a record carries the marker"}'
        elif attempt <= options.fail_first:
            status, payload = 500, b'{"error":"injected failure"}'
        elif options.throttle_every and number % options.throttle_every == 0 and attempt == options.fail_first + 1:
            status, headers, payload = 429, (("Retry-After", "1"),), b'{"error":"slow down"}'
        elif options.hang_every and number % options.hang_every == 0 and attempt == options.fail_first + 1:
            time.sleep(options.hang_seconds)
        entry = {"idempotencyKey": key, "attempt": attempt, "status": status, "verified": verified, "records": records}
        if options.header:
            entry["header"] = self.headers.get(options.header)
        log.write(json.dumps(entry) + "\n")
        self.answer(status, payload, headers)


open(options.log, "a").close()
ThreadingHTTPServer(("127.0.0.1", options.port), Receiver).serve_forever()
