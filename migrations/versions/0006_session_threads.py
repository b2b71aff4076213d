"""sessions named by a client's own thread id (AG-UI threadId)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 22:00:00

A protocol client that keeps its own conversation ids (AG-UI's `threadId`) finds its Chatee
session by that id: one session per (user, agent, thread).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('thread_id', sa.String(length=191), nullable=True))
        batch_op.create_index(
            'uq_sessions_user_agent_thread', ['user_id', 'agent_id', 'thread_id'], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('uq_sessions_user_agent_thread')
        batch_op.drop_column('thread_id')
