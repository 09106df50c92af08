# A small HTTP service for the runtime's tests. Listens on 127.0.0.1:$PORT.
#
# Flags:
#   --tag=NAME         reported by GET /
#   --exit=N           exit with status N at once (before listening)
#   --delay-start=S    sleep S seconds before listening
#   --ignore-term      ignore SIGTERM (to test SIGKILL after the grace period)
#   --print-secret     print $API_TOKEN on stdout (to test masking)
# Environment:
#   READY_FILE         /ready answers 200 only while this file exists
#   HEALTH_FILE        /health answers 200 only while this file exists
# Paths: / (JSON about the replica), /ready, /health, /crash (exits with 3),
#        /check (JSON with what the replica was handed).
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]


def opt(name, default=None):
    for a in args:
        if a == name:
            return True
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


if opt("--ignore-term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
print("starting", os.environ.get("SERIN_REPLICA"), "tag", opt("--tag", "none"), flush=True)
if opt("--print-secret"):
    print("my token is " + os.environ.get("API_TOKEN", ""), flush=True)
if opt("--exit") is not None:
    print("exiting with", opt("--exit"), file=sys.stderr, flush=True)
    os._exit(int(opt("--exit")))
if opt("--delay-start"):
    time.sleep(float(opt("--delay-start")))

READY_FILE = os.environ.get("READY_FILE")
HEALTH_FILE = os.environ.get("HEALTH_FILE")


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "error: " + str(e)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, body):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def do_GET(self):
        if self.path == "/ready":
            ok = READY_FILE is None or os.path.exists(READY_FILE)
            self.answer(200 if ok else 503, "{}")
        elif self.path == "/health":
            ok = HEALTH_FILE is None or os.path.exists(HEALTH_FILE)
            self.answer(200 if ok else 500, "{}")
        elif self.path == "/crash":
            self.answer(200, '{"crashing": true}')
            print("crashing on request", flush=True)
            os._exit(3)
        elif self.path == "/check":
            files = os.environ.get("SERIN_FILES_DIR", "")
            secrets = os.environ.get("SERIN_SECRETS_DIR", "")
            self.answer(200, json.dumps({
                "token_len": len(os.environ.get("API_TOKEN", "")),
                "tls_key_in_env": "TLS_KEY" in os.environ,
                "tls_key_file": read(os.path.join(secrets, "TLS_KEY")),
                "config": read(os.path.join(files, "config/app.toml")),
                "service": os.environ.get("SERIN_SERVICE"),
                "version": os.environ.get("SERIN_VERSION"),
                "port": os.environ.get("PORT"),
            }))
        else:
            self.answer(200, json.dumps({
                "replica": os.environ.get("SERIN_REPLICA"),
                "tag": opt("--tag", "none"),
                "pid": os.getpid(),
            }))

    def log_message(self, *a):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
