#!/usr/bin/env python3
"""A function endpoint for the tests that checks what arrives with libraries nobody here
wrote: every request's Standard Webhooks signature with the `standardwebhooks` package, once
per secret given, and its body with the `cloudevents` package (a structured event of a batch
each, or a binary-mode event). Logs a JSON line per request to LOG_PATH:

    {"id": webhook-id, "verified": [true per secret], "tamperedRejected", "wrongSecretRejected",
     "oldTimestampRejected", "events": [{"id", "type", "subject", "time", "partition", "offset", "data"}]}

    function_receiver.py PORT LOG_PATH --format provision|cloudevents|cloudevents-binary
                         --secret whsec_... [--secret whsec_...] [--fail-first N]
"""
import argparse
import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event
from cloudevents.core.formats.json import JSONFormat
from standardwebhooks import Webhook

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("log")
parser.add_argument("--format", default="provision")
parser.add_argument("--secret", action="append", default=[])
parser.add_argument("--fail-first", type=int, default=0)
options = parser.parse_args()

lock = threading.Lock()
attempts = {}
log = open(options.log, "a", buffering=1)
hooks = [Webhook(secret) for secret in options.secret]
wrong = Webhook("whsec_" + base64.b64encode(b"not the secret of this product!!").decode())


def rejected(hook, body, headers):
    try:
        hook.verify(body, headers, json_parse=False)
        return False
    except Exception:
        return True


def events_of(headers, body):
    if options.format == "cloudevents":
        assert headers.get("Content-Type") == "application/cloudevents-batch+json", headers.get("Content-Type")
        # The SDK reads one structured event; a batch is a JSON array of them.
        return [JSONFormat().read(None, json.dumps(item)) for item in json.loads(body)]
    if options.format == "cloudevents-binary":
        return [from_binary_event(HTTPMessage(headers={k.lower(): v for k, v in headers.items()}, body=body))]
    return None


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = dict(self.headers.items())
        message_id = self.headers.get("webhook-id") or ""
        with lock:
            attempt = attempts.get(message_id, 0) + 1
            attempts[message_id] = attempt
        entry = {"id": message_id, "attempt": attempt, "verified": [not rejected(hook, body, headers) for hook in hooks]}
        if hooks:
            entry["tamperedRejected"] = rejected(hooks[0], body + b" ", headers)
            entry["wrongSecretRejected"] = rejected(wrong, body, headers)
            old = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 3600)})
            entry["oldTimestampRejected"] = rejected(hooks[0], body, old)
        try:
            events = events_of(headers, body)
            if events is None:
                entry["events"] = [{"id": r["id"], "subject": r["key"], "offset": r["offset"], "partition": r["partition"],
                                    "data": r["value"]} for r in json.loads(body)["records"]]
            else:
                entry["events"] = [{"id": e.get_id(), "type": e.get_type(), "source": e.get_source(), "subject": e.get_subject(),
                                    "time": e.get_time().isoformat() if e.get_time() else None,
                                    "partition": int(e.get_extension("partition")), "offset": int(e.get_extension("offset")),
                                    "datacontenttype": e.get_datacontenttype(), "data": e.get_data()} for e in events]
        except Exception as error:
            entry["parseError"] = repr(error)
        log.write(json.dumps(entry) + "\n")
        if attempt <= options.fail_first:
            self.answer(500)
        else:
            self.answer(200)


ThreadingHTTPServer(("127.0.0.1", options.port), Receiver).serve_forever()
