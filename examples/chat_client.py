#!/usr/bin/env python3
"""A minimal Nova chat client: sends one message and prints the agent's
answer as its tokens arrive.

It connects to ``/ws``, authenticates with the development API key,
subscribes to the channel, sends a ``chat.message`` and prints

- the receipt (``message.received``: the message's id),
- the tokens of the answer to that message (``assistant.token``), as they
  come,
- the end of the answer (``assistant.complete``), then exits 0.

It exits 1 on an ``error`` frame (e.g. 4007: no agent is available), when
the connection ends, when the tokens do not add up to the completed text,
or when nothing completes within ``--timeout`` seconds.

Needs ``websockets`` (``pip install -r examples/requirements.txt``)::

    python3 examples/chat_client.py --message "hello"
"""

import argparse
import json
import sys
import time
import uuid

try:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect
except ImportError:  # pragma: no cover - told to the user
    sys.exit("chat_client.py needs websockets >= 13: pip install -r examples/requirements.txt")


class Failed(Exception):
    pass


class Out:
    """stdout, knowing whether a line (the streaming answer) is open."""

    midline = False

    @classmethod
    def write(cls, text):
        sys.stdout.write(text)
        sys.stdout.flush()
        cls.midline = not text.endswith("\n") if text else cls.midline

    @classmethod
    def line(cls, text=""):
        """``text`` on a line of its own (ending the open line first)."""
        cls.write(("\n" if cls.midline else "") + text + "\n")


def say(text=""):
    Out.line(text)


def fail(text):
    if Out.midline:
        Out.write("\n")
    print(text, file=sys.stderr, flush=True)


class Conversation:
    def __init__(self, ws, deadline):
        self.ws = ws
        self.deadline = deadline

    def send(self, frame):
        self.ws.send(json.dumps(frame))

    def recv(self):
        """The next frame; fails on an error frame or the deadline."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failed("timed out")
        try:
            frame = json.loads(self.ws.recv(timeout=left))
        except TimeoutError:
            raise Failed("timed out") from None
        except ConnectionClosed as e:
            raise Failed("the connection closed: %s" % e) from None
        if frame.get("type") in ("error", "connection.error"):
            data = frame.get("data") or {}
            raise Failed("the server answered %s %s: %s" % (frame["type"], data.get("code"), data.get("message")))
        return frame

    def expect(self, kind, reply_to):
        """Waits for the reply of type ``kind`` to request ``reply_to``."""
        while True:
            frame = self.recv()
            if frame.get("type") == kind and frame.get("reply_to") == reply_to:
                return frame


def chat(args):
    deadline = time.monotonic() + args.timeout
    open_timeout = max(1.0, min(10.0, args.timeout))
    with connect(args.url, open_timeout=open_timeout, max_size=2**22) as ws:
        talk = Conversation(ws, deadline)
        talk.send(
            {"id": "1", "type": "connection.init", "data": {"api_key": args.api_key, "user_id": args.user}}
        )
        ack = talk.expect("connection.ack", "1")
        say("connected as %s (%s)" % (args.user, (ack.get("data") or {}).get("connection_id")))
        talk.send({"id": "2", "type": "channel.subscribe", "data": {"channels": [args.channel]}})
        talk.expect("channel.subscribed", "2")
        # The server remembers request ids per user for a while (a resent
        # request gets the first receipt and is not delivered again), so
        # each message gets a fresh one.
        request = "msg-" + uuid.uuid4().hex
        talk.send({"id": request, "type": "chat.message", "channel": args.channel, "data": {"content": args.message}})

        # Frames may come in any order: the relayed message, the receipt and
        # the answer's first events race. Answers are told apart by
        # in_reply_to (an answer without it is taken as ours too).
        message_id = None
        streams = {}  # stream_id -> {"reply_to", "chunks": {index: chunk}, "end": frame data}
        ours = None
        printed = 0
        while True:
            frame = talk.recv()
            kind, data = frame.get("type"), frame.get("data") or {}
            stream = streams.get(data.get("stream_id"))
            if kind == "message.received" and frame.get("reply_to") == request:
                message_id = data.get("message_id")
                say("receipt: message %s on %s" % (message_id, data.get("channel") or args.channel))
            elif kind == "chat.message" and frame.get("channel") == args.channel:
                if data.get("sender_id") != args.user:
                    say("%s: %s" % (data.get("sender_id"), data.get("content")))
            elif kind == "assistant.start":
                streams[data.get("stream_id")] = {"reply_to": data.get("in_reply_to"), "chunks": {}, "end": None}
            elif kind == "assistant.token" and stream is not None:
                stream["chunks"][data.get("index", len(stream["chunks"]))] = data.get("chunk", "")
            elif kind in ("assistant.complete", "assistant.error") and stream is not None:
                stream["end"] = (kind, data)

            # Which answer is ours, once the receipt says which message: the
            # latest one started for it (an agent that crashed mid-answer
            # starts again with a new stream_id once it is back).
            if message_id is not None:
                latest = [sid for sid, s in streams.items() if s["reply_to"] in (message_id, None)]
                if latest and latest[-1] != ours:
                    if ours is not None:
                        say("(the agent started its answer again)")
                    ours, printed = latest[-1], 0
                    Out.write("assistant: ")
            if ours is None:
                continue
            # Our tokens, in order, as soon as they are contiguous.
            chunks = streams[ours]["chunks"]
            while printed in chunks:
                Out.write(chunks[printed])
                printed += 1
            end = streams[ours]["end"]
            if end is None:
                continue
            Out.line()
            kind, data = end
            if kind == "assistant.error":
                raise Failed("the answer failed: %s" % data.get("message"))
            if sorted(chunks) != list(range(len(chunks))):
                raise Failed("tokens are missing: got indexes %s" % sorted(chunks))
            text = "".join(chunks[i] for i in sorted(chunks))
            if data.get("content") is not None and data["content"] != text:
                raise Failed("the tokens %r do not add up to the answer %r" % (text, data["content"]))
            say("complete: %d tokens, finish_reason %s" % (len(chunks), data.get("finish_reason")))
            return


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8000/ws")
    parser.add_argument("--user", default="alice")
    parser.add_argument("--api-key", default="development")
    parser.add_argument("--channel", default="conversation:demo")
    parser.add_argument("--message", default="hello")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the whole answer")
    args = parser.parse_args()
    try:
        chat(args)
    except Failed as e:
        fail("error: %s" % e)
        sys.exit(1)
    except (OSError, TimeoutError, ConnectionClosed) as e:
        fail("error: cannot talk to %s: %s" % (args.url, e))
        sys.exit(1)


if __name__ == "__main__":
    main()
