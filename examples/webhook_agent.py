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
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Record bodies larger than this are refused (the server's records are far smaller).
MAX_BODY = 4 * 1024 * 1024
# Record ids remembered for deduplication.
REMEMBERED = 100_000


def log(*parts):
    print(*parts, flush=True)


def warn(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Answers through the REST API (the same code is in python_agent.py)
# --------------------------------------------------------------------------


class PublishError(Exception):
    """A publish failed. ``transient``: trying again later may work (the
    server is down or overloaded); otherwise the server refused what was
    sent (a bug in the agent) and resending it is pointless."""

    def __init__(self, message, transient):
        super().__init__(message)
        self.transient = transient


class Nova:
    """The server's admin REST API: ``POST /api/publish`` and
    ``POST /api/publish/batch`` with the admin token."""

    def __init__(self, server, token, timeout=10.0):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _post(self, path, body):
        request = urllib.request.Request(
            self.server + path,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + self.token},
        )
        # A short retry for blips; a longer outage is left to the caller.
        for attempt in range(3):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                transient = e.code == 429 or e.code >= 500
                if not transient or attempt == 2:
                    raise PublishError("POST %s answered %d: %s" % (path, e.code, detail), transient) from None
            except (urllib.error.URLError, OSError) as e:
                if attempt == 2:
                    raise PublishError("POST %s failed: %s" % (path, e), True) from None
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")

    def publish(self, channel, kind, data, tenant=None):
        """One event to a channel; returns its id."""
        body = {"channel": channel, "type": kind, "data": data}
        if tenant is not None:
            body["tenant"] = tenant
        return self._post("/api/publish", body)["id"]

    def publish_batch(self, events, tenant=None):
        """Several ``(channel, type, data)`` events, in order, in one request."""
        body = {"events": []}
        for channel, kind, data in events:
            event = {"channel": channel, "type": kind, "data": data}
            if tenant is not None:
                event["tenant"] = tenant
            body["events"].append(event)
        return self._post("/api/publish/batch", body)["ids"]


def reply_text(content, agent):
    """What the example "model" answers: a canned sentence quoting the user."""
    content = " ".join(str(content).split())
    if len(content) > 200:
        content = content[:200] + "…"
    return 'You said: "%s". This is the %s example agent answering word by word.' % (content, agent)


def words(text):
    """The text cut into tokens that add up to it exactly (each word with the
    spaces after it)."""
    return re.findall(r"\S+\s*", text)


def answer_chat(nova, record, agent, delay):
    """Streams a reply to a ``chat.message`` on its channel; returns how many
    tokens were sent."""
    channel, tenant, data = record["channel"], record.get("tenant"), record.get("data") or {}
    text = reply_text(data.get("content", ""), agent)
    tokens = words(text)
    stream_id = str(uuid.uuid4())
    message_id = str(uuid.uuid4())
    start = {"stream_id": stream_id, "message_id": message_id, "model": "example-echo"}
    if data.get("message_id"):
        start["in_reply_to"] = data["message_id"]
    complete = {"stream_id": stream_id, "message_id": message_id, "content": text, "finish_reason": "stop"}
    try:
        if delay <= 0:
            # Nothing to wait for between tokens: the whole answer in one request.
            events = [(channel, "assistant.start", start)]
            events += [
                (channel, "assistant.token", {"stream_id": stream_id, "chunk": t, "index": i})
                for i, t in enumerate(tokens)
            ]
            events.append((channel, "assistant.complete", complete))
            nova.publish_batch(events, tenant)
            return len(tokens)
        nova.publish(channel, "assistant.start", start, tenant)
        for i, token in enumerate(tokens):
            time.sleep(delay)
            nova.publish(channel, "assistant.token", {"stream_id": stream_id, "chunk": token, "index": i}, tenant)
        nova.publish(channel, "assistant.complete", complete, tenant)
        return len(tokens)
    except PublishError as e:
        # Tell the client this answer stopped (best effort: the server may be
        # the thing that is down).
        failed = {"stream_id": stream_id, "message": "the agent could not finish", "retryable": e.transient}
        try:
            nova.publish(channel, "assistant.error", failed, tenant)
        except PublishError:
            pass
        raise


def answer_invoke(nova, record, agent, delay):
    """Runs an ``agent.invoke``: status, output, complete on its channel;
    returns the invocation id."""
    channel, tenant, data = record["channel"], record.get("tenant"), record.get("data") or {}
    invocation = data.get("invocation_id") or record["id"]
    started = time.monotonic()
    nova.publish(
        channel,
        "agent.status",
        {"invocation_id": invocation, "state": "running", "message": "%s is working on it" % agent, "progress": 0.0},
        tenant,
    )
    time.sleep(max(delay, 0))
    output = {"echo": data.get("input"), "options": data.get("options") or {}}
    nova.publish(channel, "agent.output", {"invocation_id": invocation, "output": output, "sequence": 0}, tenant)
    time.sleep(max(delay, 0))
    result = {"agent": agent, "input": data.get("input"), "answer": "done"}
    duration_ms = int((time.monotonic() - started) * 1000)
    nova.publish(
        channel,
        "agent.complete",
        {"invocation_id": invocation, "result": result, "duration_ms": duration_ms},
        tenant,
    )
    return invocation


def handle(nova, record, agent, delay):
    """Answers one record; returns a line saying what was done."""
    kind = record.get("type")
    who = "%s on %s from %s" % (record.get("id"), record.get("channel"), record.get("user_id"))
    if kind == "chat.message":
        n = answer_chat(nova, record, agent, delay)
        return "answered chat.message %s with %d tokens" % (who, n)
    if kind == "agent.invoke":
        invocation = answer_invoke(nova, record, agent, delay)
        return "ran agent.invoke %s as invocation %s" % (who, invocation)
    return "ignored %s %s (not handled by this example)" % (kind, who)


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
