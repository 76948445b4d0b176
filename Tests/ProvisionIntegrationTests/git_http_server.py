#!/usr/bin/env python3
"""Git's smart HTTP protocol for the tests, behind basic authentication: every request with
the right `Authorization` is handed to `git http-backend` (git's own CGI program), any other
is answered 401. Counts the refused requests in STATS_PATH.

    git_http_server.py PORT PROJECT_ROOT USERNAME PASSWORD STATS_PATH
"""
import base64
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

port, project_root, username, password, stats_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
refused = 0


class GitHTTP(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_git(self):
        global refused
        if self.headers.get("Authorization") != expected:
            refused += 1
            with open(stats_path, "w") as out:
                out.write(str(refused))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        environment = dict(os.environ, GIT_PROJECT_ROOT=project_root, GIT_HTTP_EXPORT_ALL="1", REQUEST_METHOD=self.command,
                           PATH_INFO=url.path, QUERY_STRING=url.query, CONTENT_TYPE=self.headers.get("Content-Type", ""),
                           CONTENT_LENGTH=str(len(body)), REMOTE_USER=username, REMOTE_ADDR="127.0.0.1",
                           HTTP_GIT_PROTOCOL=self.headers.get("Git-Protocol", ""))
        result = subprocess.run([exec_path + "/git-http-backend"], input=body, capture_output=True, env=environment)
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = handle_git
    do_POST = handle_git


ThreadingHTTPServer(("127.0.0.1", port), GitHTTP).serve_forever()
