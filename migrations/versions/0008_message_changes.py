"""message changes: edits, tombstones, reactions, and change entries in inboxes

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 22:10:00

An inbox entry is now a message or a change (`kind`, `change_id`): edits, deletions,
reactions and membership changes reach every member through the same gap-free `inbox_seq`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('edited_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('deleted_by', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('inbox_entries', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('kind', sa.String(length=24), nullable=False, server_default='message')
        )
        batch_op.add_column(
            sa.Column('change_id', sa.BigInteger(), nullable=False, server_default='0')
        )
        batch_op.drop_index('uq_inbox_entries_user_message')
        batch_op.create_index(
            'uq_inbox_entries_user_item', ['user_id', 'message_id', 'change_id'], unique=True
        )
    op.create_table(
        'message_changes',
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('conversation_id', sa.BigInteger(), nullable=False),
        sa.Column('message_id', sa.BigInteger(), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('kind', sa.String(length=24), nullable=False),
        sa.Column('actor_id', sa.BigInteger(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=True),
        sa.Column('extra_users', sa.JSON(), nullable=True),
        sa.Column('fanout_status', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('message_changes', schema=None) as batch_op:
        batch_op.create_index(
            'ix_message_changes_fanout', ['fanout_status', 'created_at'], unique=False
        )
    op.create_table(
        'message_reactions',
        sa.Column('message_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column(
            'emoji',
            sa.String(length=64).with_variant(
                mysql.VARCHAR(length=64, collation='utf8mb4_bin'), 'mysql', 'mariadb'
            ),
            nullable=False,
        ),
        sa.Column('user_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('message_id', 'emoji', 'user_id'),
    )


def downgrade() -> None:
    op.drop_table('message_reactions')
    with op.batch_alter_table('message_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_message_changes_fanout')
    op.drop_table('message_changes')
    op.execute("DELETE FROM inbox_entries WHERE change_id <> 0")
    with op.batch_alter_table('inbox_entries', schema=None) as batch_op:
        batch_op.drop_index('uq_inbox_entries_user_item')
        batch_op.create_index(
            'uq_inbox_entries_user_message', ['user_id', 'message_id'], unique=True
        )
        batch_op.drop_column('change_id')
        batch_op.drop_column('kind')
    with op.batch_alter_table('conversation_messages', schema=None) as batch_op:
        batch_op.drop_column('deleted_by')
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('edited_at')
