"""A nats-py client that hands one subscription's JetStream messages straight to a
function, from its read loop.

nats-py builds a ``Msg`` per message (subject and reply decoded, headers parsed into a
dict), queues it, and a task per subscription takes it from the queue and calls the
callback. For the gateway's results feed (every result of every workspace, one
subscription) that path costs more than the rest of nats-py's handling together, and
the feed reads none of it but the subject, the reply (its stream position) and the body.

``DirectClient.direct(sub, handler)`` routes the messages of subscription ``sub`` whose
reply is a ``$JS.ACK`` subject to ``await handler(subject, reply, data)``, in the order
they arrive, before the next message is read (an exception it raises is logged).
Everything else (status messages: idle heartbeats, flow control; other subscriptions)
takes nats-py's own path; the subscription's own counters (``delivered``, pending) do not
count the directed messages. The handler must not wait for anything slow: while it runs,
this connection reads nothing (the server holds what comes meanwhile, and past its limit
closes the connection as a slow consumer; the feed then resumes from its last sequence).

This overrides ``Client._process_msg``, a private method of nats-py (2.16 here);
``tests/broker/test_direct.py`` runs it against a real server, so a nats-py that changes
it fails there, not in production.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from mumu.broker.ack_subject import PREFIX

log = logging.getLogger(__name__)

DirectHandler = Callable[[str, str, bytes], Awaitable[None]]
_ACK = PREFIX.encode()


class DirectClient(Client):
    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, DirectHandler] = {}

    def direct(self, sub: Subscription, handler: DirectHandler) -> None:
        """Hand ``sub``'s JetStream messages to ``handler`` from now on."""
        self._direct[sub._id] = handler

    def undirect(self, sub: Subscription) -> None:
        self._direct.pop(sub._id, None)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes,
                           headers: bytes) -> None:
        handler = self._direct.get(sid)
        if handler is None or not reply.startswith(_ACK):
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            await handler(subject.decode(), reply.decode(), data)
        except Exception:  # never into nats-py's read loop, which would drop the connection
            log.exception("handling a message of subscription %d failed", sid)
