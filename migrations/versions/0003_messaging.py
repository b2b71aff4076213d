"""conversations, members, reads, agents, message ledger, inboxes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 21:33:12.804319
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('conversation_agents',
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('agent_id', sa.BigInteger(), nullable=False),
    sa.Column('session_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('conversation_id', 'agent_id')
    )
    op.create_table('conversation_members',
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('member_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('role', sa.String(length=8), nullable=False),
    sa.Column('joined_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('conversation_id', 'member_id')
    )
    with op.batch_alter_table('conversation_members', schema=None) as batch_op:
        batch_op.create_index('ix_conversation_members_member', ['member_id'], unique=False)

    op.create_table('conversation_messages',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('sender_id', sa.BigInteger(), nullable=False),
    sa.Column('sender_type', sa.String(length=8), nullable=False),
    sa.Column('client_msg_id', sa.String(length=128), nullable=False),
    sa.Column('content', sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mariadb').with_variant(mysql.MEDIUMTEXT(), 'mysql'), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('fanout_status', sa.String(length=8), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.create_index('ix_conversation_messages_fanout', ['fanout_status', 'created_at'], unique=False)
        batch_op.create_index('uq_conversation_messages_client', ['conversation_id', 'sender_id', 'client_msg_id'], unique=True)
        batch_op.create_index('uq_conversation_messages_seq', ['conversation_id', 'seq'], unique=True)

    op.create_table('conversation_reads',
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=False),
    sa.Column('last_read_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('conversation_id', 'user_id')
    )
    op.create_table('conversations',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=True),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('private_key', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.BigInteger(), nullable=False),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_message_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('private_key')
    )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversations_parent_id'), ['parent_id'], unique=False)

    op.create_table('inbox_entries',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('inbox_seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('message_id', sa.BigInteger(), nullable=False),
    sa.Column('conversation_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('user_id', 'inbox_seq')
    )
    with op.batch_alter_table('inbox_entries', schema=None) as batch_op:
        batch_op.create_index('uq_inbox_entries_user_message', ['user_id', 'message_id'], unique=True)

    op.create_table('user_inbox_counters',
    sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )


def downgrade() -> None:
    op.drop_table('user_inbox_counters')
    with op.batch_alter_table('inbox_entries', schema=None) as batch_op:
        batch_op.drop_index('uq_inbox_entries_user_message')

    op.drop_table('inbox_entries')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversations_parent_id'))

    op.drop_table('conversations')
    op.drop_table('conversation_reads')
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.drop_index('uq_conversation_messages_seq')
        batch_op.drop_index('uq_conversation_messages_client')
        batch_op.drop_index('ix_conversation_messages_fanout')

    op.drop_table('conversation_messages')
    with op.batch_alter_table('conversation_members', schema=None) as batch_op:
        batch_op.drop_index('ix_conversation_members_member')

    op.drop_table('conversation_members')
    op.drop_table('conversation_agents')
