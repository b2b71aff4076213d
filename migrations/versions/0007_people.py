"""people: display names and deleted accounts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 22:00:00

A display name (default: the username) is what members and messages show; a deleted account
keeps its row, marked, so its messages stay attributed to "a deleted user". `search_name` is the
lower-cased display name with a b-tree index: the user directory's prefix search is an index
range scan on it and on the (already lower-cased, unique) username. A `tool` session message
keeps the name of the tool it answers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('display_name', sa.String(length=64), nullable=False, server_default='')
        )
        batch_op.add_column(sa.Column('deleted_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('search_name', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_users_search_name', ['search_name'], unique=False)
    op.execute("UPDATE users SET display_name = username, search_name = lower(username)")
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tool_name', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('tool_name')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index('ix_users_search_name')
        batch_op.drop_column('search_name')
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('display_name')
