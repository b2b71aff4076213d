"""People-to-people messaging: conversations, the message store (SQL or HBase), write fan-out
to per-user inboxes, presence and typing, and the Redis cache of hot reads.

The API (`api/routers/conversations.py`, `api/ws.py`) and the `chatee-messages` activities
(`activities/fanout.py`) share this package; nothing here imports either of them.
"""
