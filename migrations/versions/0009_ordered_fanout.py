"""ordered fan-out: what of a conversation is still pending, found by conversation

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 01:20:00

A fan-out batch first delivers, to its users, every earlier item of the conversation still
pending (`chatee.messaging.ledger.earlier_pending`), so every inbox holds a conversation's
items in order; these indexes find them without reading the conversation's history.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_conversation_messages_pending", ["conversation_id", "fanout_status", "seq"]
        )
    with op.batch_alter_table("message_changes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_message_changes_pending", ["conversation_id", "fanout_status", "id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("message_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_message_changes_pending")
    with op.batch_alter_table("conversation_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_conversation_messages_pending")
