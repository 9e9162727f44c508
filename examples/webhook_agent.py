#!/usr/bin/env python3
"""A Nova agent fed by webhooks (``delivery: webhook`` in agents.yaml).

The server POSTs every record meant for this agent to ``/nova/events``,
signed with the agent's secret (``X-Nova-Signature: sha256=<hex HMAC-SHA256
of the body>``), and retries with backoff until it gets a 2xx; the records
of one channel are sent one at a time, in order. This agent

- answers 401 when the signature does not match (the secrets differ),
- answers 200 at once and does the work on a worker thread (one worker per
  channel at a time, so a channel's answers keep its order),
- remembers the ids it has taken, so a retried record (its 200 was lost) is
  answered 200 and not run twice,
- answers ``chat.message`` with a reply streamed word by word
  (``assistant.start``, ``assistant.token``…, ``assistant.complete``) and
  ``agent.invoke`` with ``agent.status`` → ``agent.output`` →
  ``agent.complete``, through the server's REST API,
- serves ``GET /health`` for the entry's ``health_url``.

Standard library only (Python 3.8+)::

    NOVA_AGENT_SECRET=change-me python3 examples/webhook_agent.py --port 8003
"""

import argparse
import hashlib
import hmac
import json
import os
import queue
import signal
import sys
import threading
import time
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Record bodies larger than this are refused (the server's records are far smaller).
MAX_BODY = 4 * 1024 * 1024
# Record ids remembered for deduplication.
REMEMBERED = 100_000


from nova_agent import Nova, PublishError, handle, log, warn  # noqa: E402

# --------------------------------------------------------------------------
# The webhook receiver
# --------------------------------------------------------------------------


def signature_ok(secret, body, header):
    """Whether ``header`` is ``sha256=`` and the HMAC of the body."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), (header or "").strip().encode("utf-8", "replace"))


class Seen:
    """The record ids taken lately, oldest forgotten first."""

    def __init__(self, size):
        self.ids = OrderedDict()
        self.size = size
        self.lock = threading.Lock()

    def add(self, record_id):
        """``True`` when the id is new (and now remembered)."""
        with self.lock:
            if record_id in self.ids:
                self.ids.move_to_end(record_id)
                return False
            self.ids[record_id] = None
            if len(self.ids) > self.size:
                self.ids.popitem(last=False)
            return True

    def forget(self, record_id):
        with self.lock:
            self.ids.pop(record_id, None)


class Workers:
    """A fixed set of threads; the records of one channel always go to the
    same one, so they are answered one after another, in order."""

    def __init__(self, count, work):
        self.queues = [queue.Queue() for _ in range(max(count, 1))]
        self.work = work
        self.threads = [threading.Thread(target=self._run, args=(q,), daemon=True) for q in self.queues]
        for thread in self.threads:
            thread.start()

    def submit(self, record):
        lane = hash(record.get("channel") or "") % len(self.queues)
        self.queues[lane].put(record)

    def _run(self, q):
        while True:
            record = q.get()
            if record is None:
                return
            self.work(record)

    def stop(self, timeout):
        """Lets queued work finish (up to ``timeout`` seconds in all)."""
        for q in self.queues:
            q.put(None)
        until = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(until - time.monotonic(), 0))


class Agent:
    def __init__(self, args):
        self.args = args
        self.secret = args.secret.encode("utf-8")
        self.nova = Nova(args.server, args.admin_token)
        self.delay = max(args.token_delay_ms, 0) / 1000.0
        self.seen = Seen(REMEMBERED)
        self.workers = Workers(args.workers, self.work)

    def work(self, record):
        try:
            log(handle(self.nova, record, self.args.agent, self.delay))
        except PublishError as e:
            # The server got its 200 already and will not send this again:
            # a real agent would keep it somewhere durable to retry.
            warn("record %s: %s" % (record.get("id"), e))
        except Exception as e:  # a bug in the handler must not kill the worker
            warn("record %s: %s: %s" % (record.get("id"), type(e).__name__, e))

    def receive(self, headers, body):
        """A POSTed record: the HTTP status and a JSON answer."""
        if not signature_ok(self.secret, body, headers.get("X-Nova-Signature")):
            warn("refused a record with a bad signature (is the secret the one in agents.yaml?)")
            return 401, {"error": "bad signature"}
        try:
            record = json.loads(body)
            record_id = record["id"]
            assert isinstance(record, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            # Signed by the server but unreadable: sending it again will not
            # help, so it is taken (and dropped) rather than retried forever.
            warn("dropped a signed body that is not a record: %r" % body[:200])
            return 200, {"ok": False}
        if not self.seen.add(record_id):
            log("already took %s (attempt %s): not running it again" % (record_id, headers.get("X-Nova-Attempt")))
            return 200, {"ok": True, "duplicate": True}
        self.workers.submit(record)
        return 200, {"ok": True}


def handler_for(agent):
    class Handler(BaseHTTPRequestHandler):
        server_version = "nova-webhook-agent"
        protocol_version = "HTTP/1.1"  # keep-alive: the server reuses connections

        def answer(self, status, body):
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            if self.path.split("?")[0] == "/health":
                return self.answer(200, {"status": "ok", "agent": agent.args.agent})
            self.answer(404, {"error": "not found"})

        def do_POST(self):
            if self.path.split("?")[0] != "/nova/events":
                self.close_connection = True
                return self.answer(404, {"error": "not found"})
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.close_connection = True
                return self.answer(411, {"error": "Content-Length required"})
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                return self.answer(413, {"error": "too large"})
            body = self.rfile.read(length)
            status, answer = agent.receive(self.headers, body)
            self.answer(status, answer)

        def log_message(self, *_):
            pass  # one line per record is printed by the agent instead

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client hanging up a kept-alive connection is normal, not a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--secret", default=env("NOVA_AGENT_SECRET"), help="the entry's secret in agents.yaml")
    parser.add_argument("--agent", default="researcher", help="the agent's name (for its answers)")
    parser.add_argument("--server", default=env("NOVA_SERVER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--admin-token", default=env("NOVA_ADMIN_TOKEN", "dev-admin-token"))
    parser.add_argument("--token-delay-ms", type=int, default=50, help="pause between streamed tokens")
    parser.add_argument("--workers", type=int, default=4, help="threads answering records")
    args = parser.parse_args()
    if not args.secret:
        sys.exit("webhook_agent.py: a secret is required (--secret or NOVA_AGENT_SECRET), the one in agents.yaml")

    agent = Agent(args)
    httpd = Server((args.host, args.port), handler_for(agent))

    def stop(signum, _frame):
        log("%s received, stopping" % signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return: not from its own thread.
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(
        "agent %s listening on http://%s:%d/nova/events (health: /health), answering through %s"
        % (args.agent, args.host, httpd.server_address[1], args.server)
    )
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
        # Records already taken (answered 200) are finished before exiting.
        agent.workers.stop(timeout=10)
        log("stopped")


if __name__ == "__main__":
    main()
