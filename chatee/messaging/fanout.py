"""Write fan-out: one inbox entry per member, then a realtime push to whoever is online.

Pushes go to one Redis pub/sub channel per user (`chatee:user:<id>`); every API process
subscribes to the channels of the users connected to it. Pub/sub is fire-and-forget, so a
lost push costs nothing but latency: the socket notices the gap at its next push (or the
periodic reconcile) and fills it from the inbox.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select

from chatee.logging import get_logger
from chatee.messaging.ledger import Factory
from chatee.messaging.store import MessageStore
from chatee.messaging.types import ChatMessage, InboxItem
from chatee.metrics import record_fanout
from chatee.models import ConversationMember

log = get_logger(__name__)
PUBLISH_CHUNK = 500


def user_channel(user_id: int | str) -> str:
    return f"chatee:user:{user_id}"


def new_message_frame(item: InboxItem) -> dict[str, Any]:
    return {"type": "message.new", **item.to_json()}


async def publish(redis: Redis, frames: Iterable[tuple[int, dict[str, Any]]]) -> None:
    """PUBLISH each frame to its user's channel, pipelined. Failures are logged, not raised:
    the inbox already holds what matters."""
    batch = list(frames)
    try:
        for i in range(0, len(batch), PUBLISH_CHUNK):
            async with redis.pipeline(transaction=False) as pipe:
                for user_id, frame in batch[i : i + PUBLISH_CHUNK]:
                    pipe.publish(user_channel(user_id), json.dumps(frame, separators=(",", ":")))
                await pipe.execute()
    except RedisError as exc:
        log.warning("realtime push failed; clients catch up by sync", error=str(exc))


async def deliver_and_push(
    store: MessageStore,
    redis: Redis,
    message: ChatMessage,
    user_ids: Sequence[int],
    finish: bool = False,
    path: str = "inline",
) -> list[InboxItem]:
    """Write the inbox entries, then push them. `path` labels the fan-out lag metric:
    `inline` (the API, small audiences) or `workflow` (MessageFanout batches)."""
    items = await store.deliver(message, user_ids, finish)
    if items:
        record_fanout(message.id, path)
    await publish(redis, ((i.user_id, new_message_frame(i)) for i in items))
    return items


async def member_users(
    db: Factory, audience_id: int, after_user: int = 0, upto_user: int | None = None
) -> list[int]:
    """User members of a group or private chat with ids in (after_user, upto_user]."""
    stmt = select(ConversationMember.member_id).where(
        ConversationMember.conversation_id == audience_id,
        ConversationMember.kind == "user",
        ConversationMember.member_id > after_user,
    )
    if upto_user is not None:
        stmt = stmt.where(ConversationMember.member_id <= upto_user)
    async with db() as session:
        return list((await session.execute(stmt.order_by(ConversationMember.member_id))).scalars())


def batch_bounds(user_ids: Sequence[int], batch_size: int) -> list[tuple[int, int | None]]:
    """Split sorted user ids into (after, upto] ranges of `batch_size`; the last range is open
    so a member who joins while the fan-out runs is not skipped."""
    bounds: list[tuple[int, int | None]] = []
    after = 0
    for i in range(0, len(user_ids), batch_size):
        chunk = user_ids[i : i + batch_size]
        last = i + batch_size >= len(user_ids)
        bounds.append((after, None if last else chunk[-1]))
        after = chunk[-1]
    return bounds or [(0, None)]
