"""The message store: one interface, an SQL and an HBase implementation.

Whatever holds the bodies, sequencing goes through the SQL ledger (`chatee.messaging.ledger`):
per-conversation `seq` and per-user `inbox_seq` are taken there, atomically and gap-free, and
the ledger's unique keys make appends (per client_msg_id) and deliveries (per user and
message) idempotent. The implementations differ in where bodies and inbox timelines are read
from: SQL tables, or HBase tables with row keys built for the two scans a chat needs.
"""

from __future__ import annotations

from chatee.config import ConfigError, Settings
from chatee.messaging import ledger
from chatee.messaging.stores.base import MessageStore
from chatee.messaging.stores.sql import SqlMessageStore

__all__ = ["MessageStore", "create_store"]


def create_store(settings: Settings, db: ledger.Factory) -> MessageStore:
    """The store `CHATEE_MESSAGE_STORE` names (`sql` or `hbase`)."""
    if settings.message_store == "hbase":
        from chatee.messaging.stores.hbase import (
            HBaseMessageStore,  # happybase: imported only if chosen
        )

        if not settings.hbase_host:
            raise ConfigError("CHATEE_MESSAGE_STORE=hbase needs CHATEE_HBASE_HOST")
        m = settings.messaging
        return HBaseMessageStore(
            db,
            host=settings.hbase_host,
            port=m.hbase_port,
            table_prefix=m.hbase_table_prefix,
            salt_buckets=m.hbase_salt_buckets,
            pool_size=m.hbase_pool_size,
        )
    return SqlMessageStore(db)
