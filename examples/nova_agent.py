"""What both example agents share: logging, the server's REST API, and the
answers (a reply streamed word by word for ``chat.message``; status, output
and completion for ``agent.invoke``). ``python_agent.py`` feeds it records
from a Redis stream, ``webhook_agent.py`` from HTTP POSTs.

Standard library only (Python 3.8+).
"""

import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid

def log(*parts):
    print(*parts, flush=True)


def warn(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Answers through the REST API
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
