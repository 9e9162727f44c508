#!/usr/bin/env python3
"""A Nova agent fed by a Redis stream (``delivery: stream`` in agents.yaml).

The server appends every record meant for agent ``chat`` to the stream
``nova:inbound:chat``. This agent reads it with a consumer group, answers
each record through the server's REST API and acknowledges it:

- ``chat.message``: a short reply streamed word by word (``assistant.start``,
  one ``assistant.token`` per word, ``assistant.complete``) on the message's
  channel;
- ``agent.invoke``: ``agent.status`` (running), ``agent.output`` and
  ``agent.complete`` on ``agent:{name}``.

Delivery is at least once: a record is acknowledged (XACK) only after its
answer was published, and on start the agent first re-reads the records it
was given but never acknowledged. Records left pending by a consumer that
went away for good are claimed after ``--claim-idle-ms``.

The server counts a stream agent as available while its group keeps up
with the stream (a consumer read recently, or nothing waits unread; see
docs/gateway.md), so the blocking read is kept short (1 s, which is also how
long a stop may take) and records are answered one after another, each in
well under the server's idle limit (30 s by default).

Needs Python 3.8+ and redis-py (``pip install -r examples/requirements.txt``).
Run it beside a server started with ``NOVA_REDIS_URL``::

    python3 examples/python_agent.py --agent chat
"""

import argparse
import json
import os
import signal
import socket
import sys
import time

try:
    import redis
except ImportError:  # pragma: no cover - told to the user
    sys.exit("python_agent.py needs redis-py: pip install -r examples/requirements.txt")

# How long one blocking read waits: well below the server's idle limit (30 s),
# and how long a SIGTERM may wait for the loop to notice it.
BLOCK_MS = 1000
# Records read at once.
COUNT = 10
# How often records abandoned by other consumers are looked for.
CLAIM_EVERY_S = 15.0


from nova_agent import Nova, PublishError, handle, log, warn  # noqa: E402 (after the redis check)

# --------------------------------------------------------------------------
# The stream consumer
# --------------------------------------------------------------------------


class Stopping:
    """Set by SIGTERM/SIGINT; the loop finishes the record in hand and stops."""

    def __init__(self):
        self.stop = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum, _frame):
        if self.stop:
            sys.exit(1)  # a second signal: stop now
        log("%s received, stopping" % signal.Signals(signum).name)
        self.stop = True


class Agent:
    def __init__(self, args):
        self.args = args
        self.stream = args.prefix + "inbound:" + args.agent
        self.group = args.group or args.agent + "-workers"
        self.consumer = args.consumer or "%s-%d" % (socket.gethostname(), os.getpid())
        self.nova = Nova(args.server, args.admin_token)
        self.delay = max(args.token_delay_ms, 0) / 1000.0
        # The socket timeout must outlast the blocking read.
        self.redis = redis.Redis.from_url(
            args.redis_url, decode_responses=True, socket_timeout=BLOCK_MS / 1000.0 + 10, socket_connect_timeout=5
        )
        self.stopping = Stopping()

    def ensure_group(self):
        """Creates the consumer group (and the stream) unless it exists, and
        this consumer in it. The group starts at ``$``: records written
        before any group existed are not ours (the server refuses records
        while no consumer reads). The consumer is made at once, not on the
        first read that returns something, because the server counts an
        agent as available only once its group has a consumer."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id="$", mkstream=True)
            log("created consumer group %s on %s" % (self.group, self.stream))
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self.redis.xgroup_createconsumer(self.stream, self.group, self.consumer)

    def read(self, pending):
        """Our own unacknowledged records (``pending``) or new ones."""
        if pending:
            answer = self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=COUNT)
        else:
            answer = self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=COUNT, block=BLOCK_MS)
        return answer[0][1] if answer else []

    def claim_abandoned(self):
        """Takes over records another consumer was given and has not
        acknowledged for ``--claim-idle-ms`` (it crashed, or was restarted
        under another name); ``True`` if any were claimed."""
        if self.args.claim_idle_ms <= 0:
            return False
        # With JUSTID redis-py returns just the ids claimed.
        claimed = self.redis.xautoclaim(
            self.stream, self.group, self.consumer, self.args.claim_idle_ms, start_id="0-0", count=COUNT, justid=True
        )
        if claimed:
            log("claimed %d abandoned records" % len(claimed))
        return bool(claimed)

    def process(self, entry_id, fields):
        """Handles one entry; ``True`` when it may be acknowledged."""
        raw = (fields or {}).get("event")
        if raw is None:
            # Trimmed away (MAXLEN) while pending, or not a record.
            warn("entry %s has no record; acknowledging it" % entry_id)
            return True
        try:
            record = json.loads(raw)
        except ValueError as e:
            warn("entry %s is not JSON (%s); acknowledging it" % (entry_id, e))
            return True
        try:
            log(handle(self.nova, record, self.args.agent, self.delay))
            return True
        except PublishError as e:
            if e.transient:
                warn("record %s: %s; it stays pending and is tried again" % (record.get("id"), e))
                return False
            warn("record %s: %s; dropping it" % (record.get("id"), e))
            return True

    def run(self):
        log(
            "agent %s reading %s as %s/%s at %s, answering through %s"
            % (self.args.agent, self.stream, self.group, self.consumer, self.args.redis_url, self.args.server)
        )
        need_group, pending, failures = True, True, 0
        next_claim = time.monotonic()  # look once on start, after our own
        while not self.stopping.stop:
            try:
                if need_group:
                    self.ensure_group()
                    need_group = False
                if not pending and time.monotonic() >= next_claim:
                    next_claim = time.monotonic() + CLAIM_EVERY_S
                    pending = self.claim_abandoned()
                entries = self.read(pending)
                failures = 0
                if pending and not entries:
                    pending = False  # caught up: new records from now on
                    continue
                for entry_id, fields in entries:
                    if self.stopping.stop:
                        break  # the rest stay pending for the next start
                    if self.process(entry_id, fields):
                        self.redis.xack(self.stream, self.group, entry_id)
                    else:
                        # The server is unreachable: wait, then start over
                        # from the oldest pending record (order is kept).
                        pending = True
                        self.pause(1.0)
                        break
            except redis.ResponseError as e:
                if "NOGROUP" in str(e):
                    # The stream or group was deleted (e.g. Redis restarted empty).
                    warn("consumer group gone (%s); creating it again" % e)
                    need_group, pending = True, True
                    continue
                raise
            except (redis.ConnectionError, redis.TimeoutError) as e:
                failures += 1
                wait = min(0.5 * 2 ** min(failures, 5), 10.0)
                warn("redis: %s; retrying in %.1f s" % (e, wait))
                need_group, pending = True, True
                self.pause(wait)
        self.leave()
        log("stopped")

    def pause(self, seconds):
        until = time.monotonic() + seconds
        while not self.stopping.stop and time.monotonic() < until:
            time.sleep(min(0.1, until - time.monotonic()))

    def leave(self):
        """On a clean stop, removes this consumer from the group when it
        holds no pending record, so short-lived names (hostname-pid) do not
        pile up in XINFO CONSUMERS. One holding records stays, for its
        restart under the same name or for another consumer to claim."""
        try:
            mine = self.redis.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.consumer)
            if not mine:
                self.redis.xgroup_delconsumer(self.stream, self.group, self.consumer)
            else:
                log("leaving consumer %s in place: it holds pending records" % self.consumer)
        except redis.RedisError as e:
            warn("could not leave the group cleanly: %s" % e)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    env = os.environ.get
    parser.add_argument("--redis-url", default=env("NOVA_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument("--prefix", default=env("NOVA_REDIS_PREFIX", "nova:"), help="the server's Redis key prefix")
    parser.add_argument("--agent", default="chat", help="the agent's name in agents.yaml")
    parser.add_argument("--group", default=None, help="consumer group (default: <agent>-workers)")
    parser.add_argument("--consumer", default=None, help="consumer name (default: hostname-pid)")
    parser.add_argument("--server", default=env("NOVA_SERVER_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--admin-token", default=env("NOVA_ADMIN_TOKEN", "dev-admin-token"))
    parser.add_argument("--token-delay-ms", type=int, default=50, help="pause between streamed tokens")
    parser.add_argument(
        "--claim-idle-ms",
        type=int,
        default=60000,
        help="take over records other consumers left unacknowledged this long (0: never)",
    )
    args = parser.parse_args()
    try:
        Agent(args).run()
    except redis.RedisError as e:
        sys.exit("redis: %s" % e)


if __name__ == "__main__":
    main()
