"""Who sent a message, by name: a user's display name ("Deleted user" once the account is
gone) or an agent's name, for every surface's `sender_name`.

Names are read through the cache (`chatee:cache:name:<kind>:<id>`, and an API process's near
copy), a whole page of senders in one round trip, so a send or a sync page costs no query for
names in the steady state. Writers invalidate: a user's or an agent's row changed through the
ORM drops its name once the transaction commits (`chatee.messaging.cache.watch_agent_writes`);
the TTL is the safety net.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from chatee.messaging import conversations
from chatee.messaging.cache import Cache, name_key
from chatee.messaging.conversations import Member
from chatee.messaging.types import ChatMessage

Sender = tuple[str, int]  # (user | agent, id)


async def names_of(
    db: conversations.Factory, cache: Cache, senders: Iterable[Sender]
) -> dict[Sender, str]:
    wanted = list(dict.fromkeys(senders))
    if not wanted:
        return {}
    cached = await cache.get_many(*(name_key(kind, i) for kind, i in wanted))
    found = {s: name for s, name in zip(wanted, cached, strict=True) if isinstance(name, str)}
    missing = [s for s in wanted if s not in found]
    if missing:
        members = [Member(i, kind, "member") for kind, i in missing]
        looked_up = await conversations.member_names(db, members)
        unnamed = [i for i, name in looked_up.items() if not name]  # rows from before 0007
        if unnamed:
            looked_up.update(await conversations.usernames(db, unnamed))
        for kind, i in missing:
            found[(kind, i)] = looked_up[i]
            await cache.set(name_key(kind, i), looked_up[i])
    return found


def _sender(message: ChatMessage) -> Sender:
    return ("agent" if message.sender_type == "agent" else "user", message.sender_id)


async def named(
    db: conversations.Factory, cache: Cache, messages: Sequence[ChatMessage]
) -> list[ChatMessage]:
    """The messages with their `sender_name` filled in (one cache read for all of them)."""
    names = await names_of(db, cache, (_sender(m) for m in messages if m.sender_name is None))
    return [m if m.sender_name is not None else m.named(names[_sender(m)]) for m in messages]
