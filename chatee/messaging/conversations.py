"""Conversations and their members: private chats (one per pair), groups with roles, threads.

A thread has no members of its own: its *audience* is its parent group, so adding someone to
the group lets them into every thread. Everything that asks "who is in here?" goes through
`load_view`, which reads the Redis cache first (see `chatee.messaging.cache`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatee.errors import Conflict, Forbidden, Invalid, NotFound
from chatee.ids import new_id
from chatee.messaging import ledger
from chatee.messaging.cache import Cache, agent_key, conversation_key, members_key
from chatee.models import (
    Agent,
    Conversation,
    ConversationAgent,
    ConversationMember,
    ConversationRead,
    Session,
    User,
)

if TYPE_CHECKING:  # services → messaging.service → here
    from chatee.services import Services

ROLES = ("owner", "admin", "member")
Factory = async_sessionmaker[AsyncSession]


def not_found() -> NotFound:
    return NotFound("conversation not found")


@dataclass(frozen=True)
class Member:
    id: int
    kind: str  # user | agent
    role: str


@dataclass
class View:
    """What the hot paths need to know about a conversation, cacheable as JSON."""

    id: int
    type: str
    title: str | None
    parent_id: int | None
    created_by: int
    members: dict[int, Member] = field(default_factory=dict)  # the audience's

    @property
    def audience_id(self) -> int:
        return self.parent_id or self.id

    def user_ids(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if m.kind == "user")

    def agent_ids(self) -> list[int]:
        return sorted(m.id for m in self.members.values() if m.kind == "agent")

    def has_user(self, user_id: int) -> bool:
        member = self.members.get(user_id)
        return member is not None and member.kind == "user"

    def role(self, user_id: int) -> str | None:
        member = self.members.get(user_id)
        return member.role if member is not None and member.kind == "user" else None


async def load_view(db: Factory, cache: Cache, conversation_id: int) -> View | None:
    # one round trip for the common case: the conversation and its own member list
    meta, members = await cache.get_many(
        conversation_key(conversation_id), members_key(conversation_id)
    )
    if meta is None:
        async with db() as session:
            row = await session.get(Conversation, conversation_id)
        if row is None:
            return None
        meta = {
            "type": row.type,
            "title": row.title,
            "parent_id": row.parent_id,
            "created_by": row.created_by,
        }
        await cache.set(conversation_key(conversation_id), meta)
    view = View(
        id=conversation_id,
        type=meta["type"],
        title=meta["title"],
        parent_id=meta["parent_id"],
        created_by=meta["created_by"],
    )
    if members is not None and view.audience_id == conversation_id:
        view.members = _members(members)
    else:  # a thread (its parent's members), or not cached
        view.members = await load_members(db, cache, view.audience_id)
    return view


async def load_members(db: Factory, cache: Cache, audience_id: int) -> dict[int, Member]:
    cached = await cache.get(members_key(audience_id))
    if cached is None:
        async with db() as session:
            rows = (
                await session.execute(
                    select(ConversationMember).where(
                        ConversationMember.conversation_id == audience_id
                    )
                )
            ).scalars()
            cached = [[m.member_id, m.kind, m.role] for m in rows]
        await cache.set(members_key(audience_id), cached)
    return _members(cached)


def _members(cached: list[list[Any]]) -> dict[int, Member]:
    return {int(i): Member(int(i), kind, role) for i, kind, role in cached}


async def visible_view(db: Factory, cache: Cache, conversation_id: int, user_id: int) -> View:
    """The conversation if the user is in it; otherwise 404, exactly like a missing one."""
    view = await load_view(db, cache, conversation_id)
    if view is None or not view.has_user(user_id):
        raise not_found()
    return view


async def agent_config(db: Factory, cache: Cache, agent_id: int) -> dict[str, Any] | None:
    """The fields messaging needs of an agent (name for @mentions, owner, policy)."""
    cached = await cache.get(agent_key(agent_id))
    if cached is not None:
        return cached
    async with db() as session:
        agent = await session.get(Agent, agent_id)
    if agent is None:
        return None
    config = {"id": agent.id, "name": agent.name, "owner_id": agent.owner_id}
    await cache.set(agent_key(agent_id), config)
    return config


# -- creating and changing conversations --------------------------------------------------------


async def resolve_members(session: AsyncSession, ids: Iterable[int], owner: int) -> list[Member]:
    """Users by id, and agents by id when the caller owns them; anything else is refused."""
    wanted = list(dict.fromkeys(ids))
    users = set(
        (
            await session.execute(
                select(User.id).where(User.id.in_(wanted), User.deleted_at.is_(None))
            )
        ).scalars()
    )
    agents = {
        a.id: a.owner_id
        for a in (await session.execute(select(Agent).where(Agent.id.in_(wanted)))).scalars()
    }
    members = []
    for member_id in wanted:
        if member_id in users:
            members.append(Member(member_id, "user", "member"))
        elif agents.get(member_id) == owner:
            members.append(Member(member_id, "agent", "member"))
        else:
            raise Invalid(f"no user, nor agent of yours, with id {member_id}", "unknown-member")
    return members


async def create_private(db: Factory, me: int, other_id: int) -> tuple[Conversation, bool]:
    """The pair's private chat; an existing one is returned (one per pair)."""
    if other_id == me:
        raise Invalid("a private chat needs someone else", "bad-members")
    key = f"{min(me, other_id)}:{max(me, other_id)}"
    async with db() as session:
        existing = await _private(session, key)
        if existing is not None:
            return existing, False
        (other,) = await resolve_members(session, [other_id], me)
        conversation = Conversation(
            id=new_id(), type="private", private_key=key, created_by=me, member_count=2
        )
        session.add(conversation)
        session.add_all(
            [
                ConversationMember(conversation_id=conversation.id, member_id=me, kind="user"),
                ConversationMember(
                    conversation_id=conversation.id, member_id=other.id, kind=other.kind
                ),
            ]
        )
        try:
            await session.commit()
            return conversation, True
        except IntegrityError:  # the other side opened it at the same moment
            await session.rollback()
    async with db() as session:
        existing = await _private(session, key)
        assert existing is not None
        return existing, False


async def _private(session: AsyncSession, key: str) -> Conversation | None:
    stmt = select(Conversation).where(Conversation.private_key == key)
    return (await session.execute(stmt)).scalar_one_or_none()


async def create_group(
    db: Factory, me: int, title: str | None, member_ids: Sequence[int], max_members: int
) -> Conversation:
    async with db() as session:
        members = [m for m in await resolve_members(session, member_ids, me) if m.id != me]
        if len(members) + 1 > max_members:
            raise Conflict(f"a group has at most {max_members} members", "too-many-members")
        conversation = Conversation(
            id=new_id(), type="group", title=title, created_by=me, member_count=len(members) + 1
        )
        session.add(conversation)
        session.add(
            ConversationMember(
                conversation_id=conversation.id, member_id=me, kind="user", role="owner"
            )
        )
        session.add_all(
            ConversationMember(conversation_id=conversation.id, member_id=m.id, kind=m.kind)
            for m in members
        )
        await session.commit()
        return conversation


def _require_group_admin(view: View, actor: int) -> None:
    if view.type != "group":
        raise Conflict("only a group has members to manage", "not-a-group")
    if view.role(actor) not in ("owner", "admin"):
        raise Forbidden("only the group's owner or an admin can do that")


def _require_manager(view: View, actor: int, owner_only: bool) -> None:
    """Groups and their threads are managed by the group's owner (and admins, unless
    `owner_only`); a private chat has no one to manage it."""
    if view.type == "private":
        raise Conflict("a private chat has no title and cannot be deleted", "not-a-group")
    allowed = ("owner",) if owner_only else ("owner", "admin")
    if view.role(actor) not in allowed:
        who = "owner" if owner_only else "owner or an admin"
        raise Forbidden(f"only the group's {who} can do that")


class MembersChanged(Exception):
    """The members are no longer those a change was planned on (another change committed
    first): plan it again on the conversation as it is now (`reread_view`)."""


@dataclass(frozen=True)
class Edit:
    """A change to a conversation — its members, its title, the conversation itself — with
    its rules checked against `before`, written by `write` in the caller's transaction, so
    `chatee.messaging.changes` records the change everyone is told of in that same one.

    `write` first locks the audience's conversation row and finds its members still
    `before`'s, else raises `MembersChanged`. Every change of members does, so they commit one
    at a time, and who was in it (`before`) and who is (`after`) — whom it is told to — are
    exact."""

    before: View
    after: View | None  # as the write leaves it; None: deleted
    members: list[Member]  # whom a membership change is about
    statements: Callable[[AsyncSession], Awaitable[None]]
    keys: set[str]  # its cache entries, to drop once committed (`statements` may add some)
    new_owner: Member | None = None  # an owner left or was removed: who owns the group now

    async def write(self, session: AsyncSession) -> None:
        await _hold(session, self.before)
        await self.statements(session)


async def _hold(session: AsyncSession, before: View) -> None:
    """Lock the audience's conversation row, then check its members are `before`'s. The lock
    is the transaction's first statement: on MySQL what it reads next is current, on SQLite it
    takes the write lock."""
    c = Conversation.__table__.c
    lock = update(Conversation.__table__).where(c.id == before.audience_id)
    if (await session.execute(lock.values(member_count=c.member_count))).rowcount == 0:
        raise not_found()
    m = ConversationMember.__table__.c
    rows = await session.execute(
        select(m.member_id, m.kind, m.role).where(m.conversation_id == before.audience_id)
    )
    if {i: Member(i, kind, role) for i, kind, role in rows} != before.members:
        raise MembersChanged(before.id)


async def _count(session: AsyncSession, conversation_id: int, delta: int) -> None:
    c = Conversation.__table__.c
    await session.execute(
        update(Conversation.__table__)
        .where(c.id == conversation_id)
        .values(member_count=c.member_count + delta)
    )


async def plan_add(
    db: Factory, view: View, actor: int, member_ids: Sequence[int], role: str, max_members: int
) -> Edit | None:
    """Adding users, or the actor's own agents, to a group: its owner or an admin (only the
    owner makes admins). None when they are all in it already."""
    _require_group_admin(view, actor)
    if role == "owner" or (role == "admin" and view.role(actor) != "owner"):
        raise Forbidden(f"you cannot make members {role}s")
    async with db() as session:
        wanted = await resolve_members(session, member_ids, actor)
    new = [Member(m.id, m.kind, role) for m in wanted if m.id not in view.members]
    if not new:
        return None
    if len(view.members) + len(new) > max_members:
        raise Conflict(f"a group has at most {max_members} members", "too-many-members")

    async def statements(session: AsyncSession) -> None:
        await session.execute(
            insert(ConversationMember.__table__),
            [{"conversation_id": view.id, "member_id": m.id, "kind": m.kind, "role": role}
             for m in new],
        )  # fmt: skip
        await _count(session, view.id, len(new))

    after = replace(view, members={**view.members, **{m.id: m for m in new}})
    return Edit(view, after, new, statements, {members_key(view.id)})


async def plan_removal(db: Factory, view: View, actor: int, member_id: int) -> Edit:
    """Taking a member out of a group: admins remove members, owners anyone, everyone may
    leave. An owner who leaves hands the group to the longest-standing admin, else member."""
    if view.type != "group":
        raise Conflict("only a group has members to manage", "not-a-group")
    target = view.members.get(member_id)
    if target is None:
        raise NotFound("no such member")
    actor_role = view.role(actor)
    if member_id != actor:
        allowed = actor_role == "owner" or (actor_role == "admin" and target.role == "member")
        if not allowed:
            raise Forbidden("you cannot remove that member")
    members = {i: x for i, x in view.members.items() if i != member_id}
    heir = await _heir(db, view, member_id) if target.role == "owner" else None
    new_owner = Member(heir.id, heir.kind, "owner") if heir is not None else None
    if new_owner is not None:
        members[new_owner.id] = new_owner

    async def statements(session: AsyncSession) -> None:
        await session.execute(
            delete(ConversationMember).where(
                ConversationMember.conversation_id == view.id,
                ConversationMember.member_id == member_id,
            )
        )
        await _count(session, view.id, -1)
        if heir is not None:
            await session.execute(
                update(ConversationMember)
                .where(
                    ConversationMember.conversation_id == view.id,
                    ConversationMember.member_id == heir.id,
                )
                .values(role="owner")
            )

    after = replace(view, members=members)
    return Edit(view, after, [target], statements, {members_key(view.id)}, new_owner)


async def _heir(db: Factory, view: View, leaving: int) -> Member | None:
    """Who gets the group its owner leaves (a user). Read before the write, which finds the
    members unchanged, so it is still the one."""
    async with db() as session:
        heir_id = await session.scalar(
            select(ConversationMember.member_id)
            .where(
                ConversationMember.conversation_id == view.id,
                ConversationMember.kind == "user",
                ConversationMember.member_id != leaving,
            )
            .order_by((ConversationMember.role != "admin"), ConversationMember.joined_at)
            .limit(1)
        )
    return view.members.get(heir_id) if heir_id is not None else None


def plan_role(view: View, actor: int, member_id: int, role: str) -> Edit:
    """A member's new role: the owner only. Making someone owner hands the group over (the
    owner becomes an admin)."""
    if view.type != "group":
        raise Conflict("only a group has members to manage", "not-a-group")
    if view.role(actor) != "owner":
        raise Forbidden("only the group's owner can change roles")
    target = view.members.get(member_id)
    if target is None or target.kind != "user":
        raise NotFound("no such member")
    members = dict(view.members)
    if role == "owner":
        members[actor] = Member(actor, "user", "admin")
    members[member_id] = Member(member_id, "user", role)

    async def statements(session: AsyncSession) -> None:
        if role == "owner":
            await session.execute(
                update(ConversationMember)
                .where(
                    ConversationMember.conversation_id == view.id,
                    ConversationMember.member_id == actor,
                )
                .values(role="admin")
            )
        await session.execute(
            update(ConversationMember)
            .where(
                ConversationMember.conversation_id == view.id,
                ConversationMember.member_id == member_id,
            )
            .values(role=role)
        )

    after = replace(view, members=members)
    return Edit(view, after, [members[member_id]], statements, {members_key(view.id)})


def plan_rename(view: View, actor: int, title: str) -> Edit:
    """A group's or thread's new title: the group's owner or an admin."""
    _require_manager(view, actor, owner_only=False)

    async def statements(session: AsyncSession) -> None:
        c = Conversation.__table__.c
        renamed = update(Conversation.__table__).where(c.id == view.id).values(title=title)
        if (await session.execute(renamed)).rowcount == 0:  # a thread deleted meanwhile
            raise not_found()

    return Edit(view, replace(view, title=title), [], statements, {conversation_key(view.id)})


def plan_deletion(view: View, actor: int) -> Edit:
    """Deleting a group (with its threads) or a thread: the group's owner only. The
    conversation, its members, read markers and agent links go; its messages stay in the
    ledger, so every member's inbox stays gap-free. (Its agents' sessions end before:
    `end_agent_sessions`.)"""
    _require_manager(view, actor, owner_only=True)
    keys: set[str] = set()

    async def statements(session: AsyncSession) -> None:
        c = Conversation.__table__.c
        threads = select(c.id).where(c.parent_id == view.id).with_for_update()
        ids = [view.id, *(await session.scalars(threads))]
        for table in (ConversationAgent, ConversationMember, ConversationRead):
            await session.execute(delete(table).where(table.conversation_id.in_(ids)))
        await session.execute(delete(Conversation).where(Conversation.id.in_(ids)))
        keys.update(k for i in ids for k in (conversation_key(i), members_key(i)))

    return Edit(view, None, [], statements, keys)


async def end_agent_sessions(svc: Services, view: View) -> None:
    """Stop and delete the agents' sessions of a conversation being deleted (and of its
    threads). Each goes in a transaction of its own, before the conversation's: it stops a
    Temporal workflow and drops a Redis stream, and is safe to repeat."""
    from chatee import agent_sessions  # noqa: PLC0415  (agent_sessions → services → here)

    db = svc.sessionmaker
    ids = [view.id, *(t.id for t in await threads_of(db, view.id))]
    async with db() as session:
        links = list(
            await session.scalars(
                select(ConversationAgent).where(ConversationAgent.conversation_id.in_(ids))
            )
        )
        for link in links:
            linked = await session.get(Session, link.session_id)
            if linked is not None:
                await agent_sessions.delete_session(svc, session, linked)


async def reread_view(db: Factory, cache: Cache, view: View, user_id: int) -> View:
    """The conversation as the database has it now, if the user is still in it: after
    `MembersChanged` the cache may be behind."""
    await cache.delete(conversation_key(view.id), members_key(view.audience_id))
    return await visible_view(db, cache, view.id, user_id)


async def groups_of(db: Factory, member_id: int) -> list[int]:
    """The groups a user or agent is in."""
    async with db() as session:
        rows = await session.execute(
            select(ConversationMember.conversation_id)
            .join(Conversation, Conversation.id == ConversationMember.conversation_id)
            .where(ConversationMember.member_id == member_id, Conversation.type == "group")
        )
        return list(rows.scalars())


async def create_thread(db: Factory, view: View, actor: int, title: str) -> Conversation:
    if view.type != "group":
        raise Conflict("threads open under a group", "not-a-group")
    thread = Conversation(
        id=new_id(), type="thread", title=title, parent_id=view.id, created_by=actor
    )
    async with db() as session:
        session.add(thread)
        await session.commit()
    return thread


async def threads_of(db: Factory, group_id: int) -> list[Conversation]:
    async with db() as session:
        rows = await session.execute(
            select(Conversation)
            .where(Conversation.parent_id == group_id)
            .order_by(Conversation.id.desc())
        )
        return list(rows.scalars())


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    conversation: Conversation
    unread: int
    last_read_seq: int
    role: str | None


async def list_for(db: Factory, user_id: int, limit: int) -> list[Listed]:
    """The user's private chats and groups, and the threads of those groups, most recently
    active first, each with its unread count (`last_seq` − the user's read marker)."""
    mine = select(ConversationMember.conversation_id).where(
        ConversationMember.member_id == user_id, ConversationMember.kind == "user"
    )
    activity = func.coalesce(Conversation.last_message_at, Conversation.created_at)
    stmt = (
        select(Conversation, ConversationRead.last_read_seq, ConversationMember.role)
        .outerjoin(
            ConversationRead,
            and_(
                ConversationRead.conversation_id == Conversation.id,
                ConversationRead.user_id == user_id,
            ),
        )
        .outerjoin(
            ConversationMember,
            and_(
                ConversationMember.conversation_id == Conversation.id,
                ConversationMember.member_id == user_id,
            ),
        )
        .where(or_(Conversation.id.in_(mine), Conversation.parent_id.in_(mine)))
        .order_by(activity.desc(), Conversation.id.desc())
        .limit(limit)
    )
    async with db() as session:
        rows = (await session.execute(stmt)).all()
    return [Listed(c, max(0, c.last_seq - (read or 0)), read or 0, role) for c, read, role in rows]


async def conversation_row(db: Factory, conversation_id: int) -> Conversation | None:
    async with db() as session:
        return await session.get(Conversation, conversation_id)


async def unread_of(db: Factory, conversation_id: int, user_id: int) -> tuple[int, int]:
    """(last_seq, the user's read marker) of one conversation."""
    async with db() as session:
        last = await session.scalar(
            select(Conversation.last_seq).where(Conversation.id == conversation_id)
        )
        read = await session.scalar(
            select(ConversationRead.last_read_seq).where(
                ConversationRead.conversation_id == conversation_id,
                ConversationRead.user_id == user_id,
            )
        )
    return last or 0, read or 0


async def mark_read(db: Factory, conversation_id: int, user_id: int, seq: int) -> int:
    """Move the user's read marker forward to `seq` (never back, never past the last message).
    Returns the marker as stored. One upsert, so two devices marking at once cannot both
    insert; a deadlock between them (InnoDB gap locks) is retried."""
    for attempt in range(ledger.ATTEMPTS):
        async with db() as session:
            try:
                last = await session.scalar(
                    select(Conversation.last_seq).where(Conversation.id == conversation_id)
                )
                await ledger.read_up_to(session, conversation_id, user_id, min(seq, last or 0))
                marker = await session.scalar(
                    select(ConversationRead.last_read_seq).where(
                        ConversationRead.conversation_id == conversation_id,
                        ConversationRead.user_id == user_id,
                    )
                )
                await session.commit()
                return int(marker or 0)
            except OperationalError as exc:
                await session.rollback()
                if not ledger.transient(exc):
                    raise
        await ledger.backoff(attempt)
    raise RuntimeError(f"could not mark conversation {conversation_id} read")


DELETED_USER = "Deleted user"
DELETED_AGENT = "Deleted agent"


async def member_names(db: Factory, members: Iterable[Member]) -> dict[int, str]:
    """What each member is called: a user's display name ("Deleted user" once the account is
    gone), an agent's name."""
    members = list(members)
    users = [m.id for m in members if m.kind == "user"]
    agents = [m.id for m in members if m.kind == "agent"]
    names: dict[int, str] = {}
    async with db() as session:
        if users:
            rows = await session.execute(
                select(User.id, User.display_name, User.deleted_at).where(User.id.in_(users))
            )
            names.update({i: DELETED_USER if gone else name for i, name, gone in rows.all()})
        if agents:
            rows = await session.execute(select(Agent.id, Agent.name).where(Agent.id.in_(agents)))
            names.update(dict(rows.all()))
    return {
        m.id: names.get(m.id, DELETED_USER if m.kind == "user" else DELETED_AGENT) for m in members
    }


async def usernames(db: Factory, user_ids: Sequence[int]) -> dict[int, str]:
    async with db() as session:
        rows = await session.execute(select(User.id, User.username).where(User.id.in_(user_ids)))
        return dict(rows.all())


async def contacts(db: Factory, user_id: int, max_size: int, limit: int = 5000) -> list[int]:
    """Users who share a private chat or a small group with `user_id`: who sees their
    presence change."""
    mine = (
        select(ConversationMember.conversation_id)
        .join(Conversation, Conversation.id == ConversationMember.conversation_id)
        .where(ConversationMember.member_id == user_id, Conversation.member_count <= max_size)
    )
    stmt = (
        select(ConversationMember.member_id)
        .where(
            ConversationMember.conversation_id.in_(mine),
            ConversationMember.kind == "user",
            ConversationMember.member_id != user_id,
        )
        .distinct()
        .limit(limit)
    )
    async with db() as session:
        return list((await session.execute(stmt)).scalars())
