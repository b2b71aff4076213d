"""Conversations between people (and agents): private chats, groups and their threads,
members and roles, messages with their edits, deletions and reactions, read markers, and the
inbox (`sync`, `live`) through which every member learns of each of those."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from chatee.client.base import BaseClient, segment
from chatee.client.live import Live
from chatee.client.models import (
    Conversation,
    ConversationMessage,
    ConversationMessagePage,
    Member,
    ReadMarker,
    SyncPage,
)

Role = Literal["owner", "admin", "member"]


class ConversationsApi(BaseClient):
    async def create_conversation(
        self, type: str, members: list[str], title: str | None = None
    ) -> Conversation:
        """`private` (one other member) or `group`; members are user ids or your agents' ids.
        A private chat that exists already is returned as it is."""
        body = {"type": type, "members": members, "title": title}
        return await self._model(Conversation, "POST", "/conversations", json=body)

    async def conversations(self, limit: int = 50) -> list[Conversation]:
        """Most recently active first, each with its `unread` count."""
        params = {"limit": limit}
        return await self._models(Conversation, "GET", "/conversations", params=params)

    async def conversation(self, conversation_id: str) -> Conversation:
        return await self._model(Conversation, "GET", f"/conversations/{conversation_id}")

    async def rename_conversation(self, conversation_id: str, title: str) -> Conversation:
        """A group or thread (its owner or an admin); members get `conversation.renamed`."""
        path = f"/conversations/{conversation_id}"
        return await self._model(Conversation, "PATCH", path, json={"title": title})

    async def delete_conversation(self, conversation_id: str) -> None:
        """A group with its threads, or a thread: the group's owner only."""
        await self.request("DELETE", f"/conversations/{conversation_id}")

    # -- members ---------------------------------------------------------------------------

    async def members(self, conversation_id: str) -> list[Member]:
        """People and agents, with their names and roles."""
        return await self._models(Member, "GET", f"/conversations/{conversation_id}/members")

    async def add_members(
        self,
        conversation_id: str,
        member_ids: list[str],
        role: Literal["admin", "member"] = "member",
    ) -> list[Member]:
        """Add people (or your own agents) to a group (owner or admin); those already in are
        skipped, so the answer is only the ones added."""
        path = f"/conversations/{conversation_id}/members"
        body = {"members": member_ids, "role": role}
        return await self._models(Member, "POST", path, json=body)

    async def set_role(self, conversation_id: str, member_id: str, role: Role) -> Member:
        """The owner only. Making someone owner hands the group over: you become an admin."""
        path = f"/conversations/{conversation_id}/members/{member_id}"
        return await self._model(Member, "PATCH", path, json={"role": role})

    async def remove_member(self, conversation_id: str, member_id: str) -> None:
        """Take someone out (owner or admin) — or leave, with your own id (`user_id`)."""
        await self.request("DELETE", f"/conversations/{conversation_id}/members/{member_id}")

    # -- threads ---------------------------------------------------------------------------

    async def create_thread(self, conversation_id: str, title: str) -> Conversation:
        """A topic under a group, with its own messages; every group member is in it."""
        path = f"/conversations/{conversation_id}/threads"
        return await self._model(Conversation, "POST", path, json={"title": title})

    async def threads(self, conversation_id: str) -> list[Conversation]:
        return await self._models(Conversation, "GET", f"/conversations/{conversation_id}/threads")

    # -- messages --------------------------------------------------------------------------

    async def send_message(
        self, conversation_id: str, content: str, client_msg_id: str | None = None
    ) -> ConversationMessage:
        """Idempotent on `client_msg_id` (one is made up when not given)."""
        body = {"content": content, "client_msg_id": client_msg_id or uuid.uuid4().hex}
        path = f"/conversations/{conversation_id}/messages"
        return await self._model(ConversationMessage, "POST", path, json=body)

    async def history(
        self, conversation_id: str, before_seq: int | None = None, limit: int = 50
    ) -> ConversationMessagePage:
        """Newest first; pass `next_before_seq` back as `before_seq` for older ones."""
        params: dict[str, Any] = {"limit": limit}
        if before_seq is not None:
            params["before_seq"] = before_seq
        path = f"/conversations/{conversation_id}/messages"
        return await self._model(ConversationMessagePage, "GET", path, params=params)

    async def edit_message(
        self, conversation_id: str, message_id: str, content: str
    ) -> ConversationMessage:
        """Your own message only; it keeps its `seq` and gets `edited_at`."""
        path = f"/conversations/{conversation_id}/messages/{message_id}"
        return await self._model(ConversationMessage, "PATCH", path, json={"content": content})

    async def delete_message(self, conversation_id: str, message_id: str) -> ConversationMessage:
        """Yours, or any in a group you own or administer: it stays in its place as a
        tombstone (`deleted`, no content), which is what this answers."""
        path = f"/conversations/{conversation_id}/messages/{message_id}"
        return await self._model(ConversationMessage, "DELETE", path)

    async def react(self, conversation_id: str, message_id: str, emoji: str) -> ConversationMessage:
        """One emoji; reacting again changes nothing. The message, with its `reactions` as
        you see them (`me`: whether you reacted)."""
        path = _reaction(conversation_id, message_id, emoji)
        return await self._model(ConversationMessage, "PUT", path)

    async def unreact(
        self, conversation_id: str, message_id: str, emoji: str
    ) -> ConversationMessage:
        """Take your reaction back."""
        path = _reaction(conversation_id, message_id, emoji)
        return await self._model(ConversationMessage, "DELETE", path)

    async def mark_read(self, conversation_id: str, seq: int) -> ReadMarker:
        """Move your read marker forward (never back)."""
        path = f"/conversations/{conversation_id}/read"
        return await self._model(ReadMarker, "POST", path, json={"seq": seq})

    # -- the inbox -------------------------------------------------------------------------

    async def sync(self, after: int = 0, limit: int | None = None) -> SyncPage:
        """One page of the inbox after `after` (the last `inbox_seq` you hold)."""
        params: dict[str, Any] = {"after": after}
        if limit:
            params["limit"] = limit
        return await self._model(SyncPage, "GET", "/sync", params=params)

    def live(self, after: int = 0, session_id: str | None = None) -> Live:
        """The WebSocket, kept open: see `Live`."""
        return Live(self, after, session_id)


def _reaction(conversation_id: str, message_id: str, emoji: str) -> str:
    return f"/conversations/{conversation_id}/messages/{message_id}/reactions/{segment(emoji)}"
