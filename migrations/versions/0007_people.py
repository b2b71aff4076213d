"""people: display names and deleted accounts

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 22:00:00

A display name (default: the username) is what members and messages show; a deleted account
keeps its row, marked, so its messages stay attributed to "a deleted user".
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
    op.execute("UPDATE users SET display_name = username")


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('display_name')
