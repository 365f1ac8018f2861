"""A webhook receiver on loopback for BareCount's delivery tests: verifies every request with
the Standard Webhooks reference verifier (PyPI `standardwebhooks`) and misbehaves on purpose.

    python webhook_receiver.py --secrets FILE --log FILE
prints "READY <port>" once it listens. FILE of secrets: one whsec_... per line, re-read on every
request. Each request is appended to the log as a JSON line. Paths:
    /ok                204
    /flaky/N           500 for the first N arrivals of a webhook-id, then 200
    /gone              410
    /slow/MS           answer 200 after MS milliseconds
    /drop              close the connection without an answer
    /retry-after/S     429 with Retry-After: S on a webhook-id's first arrival, then 200
    /hold/N            hold the first N arrivals of a webhook-id for 60 s, then 200
"""
import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

args = None
lock = threading.Lock()
arrivals = {}


def secrets():
    with open(args.secrets) as f:
        return [line.strip() for line in f if line.strip()]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        wid = headers.get("webhook-id", "")
        verified_by = []
        error = None
        for i, s in enumerate(secrets()):
            try:
                Webhook(s).verify(body, headers)
                verified_by.append(i)
            except WebhookVerificationError as e:
                error = str(e)
        with lock:
            n = arrivals.get((self.path, wid), 0) + 1
            arrivals[(self.path, wid)] = n
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        entry = {"path": self.path, "webhook_id": wid, "arrival": n, "at": time.time(),
                 "verified": bool(verified_by), "verified_by": verified_by, "error": None if verified_by else error,
                 "signatures": len(headers.get("webhook-signature", "").split()),
                 "authorization": headers.get("authorization"), "body": payload}
        with lock:
            with open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
        parts = self.path.strip("/").split("/")
        kind = parts[0]
        num = float(parts[1]) if len(parts) > 1 else 0
        if kind == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.connection.close()
            self.close_connection = True
            return
        if kind == "slow":
            time.sleep(num / 1000)
        if kind == "hold" and n <= num:
            time.sleep(60)
        if kind == "flaky" and n <= num:
            return self.answer(500)
        if kind == "gone":
            return self.answer(410)
        if kind == "retry-after" and n == 1:
            return self.answer(429, {"Retry-After": str(int(num))})
        self.answer(204 if kind == "ok" else 200)

    def answer(self, code, extra=None):
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("content-length", "0")
        self.end_headers()


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--secrets", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
