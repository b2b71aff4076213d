"""The WebSocket hub: `WS /ws?token=<jwt>[&after=<inbox_seq>][&session_id=<id>]`.

One `Hub` per API process. Each socket is a `Connection` with its own bounded outgoing queue
and writer task (both exist only while frames wait: idle sockets are cheap), so a client that
stops reading only ever blocks itself. Pushes reach the sockets on every process through one
Redis pub/sub channel (chatee/messaging/fanout.py); a push this process sends goes to its own
sockets directly.

Inbox delivery is exact per socket, for every kind of entry: `message.new` for a new message,
`inbox.event` for a change (an edit, a deletion, a reaction, a membership change), both with
the user's `inbox_seq`. A connection keeps a cursor — the last `inbox_seq` it
queued — and only ever queues `cursor + 1`: a push that arrives early (out of order, or after
one was lost) makes it read the gap from the inbox first, a duplicate is dropped. Connect with
`after=<your last inbox_seq>` and the socket sends everything after it, in order, once;
without it the socket starts at the current end. When the queue is full the socket stops
taking messages and tells the client to resync (`error` code `resync` with `after`); the client
answers with `sync` frames until `has_more` is false, and live delivery resumes from there.
"""

from api.ws.endpoint import router
from api.ws.hub import Hub

__all__ = ["Hub", "router"]
