"""knowledge bases, documents, chunks (RAG)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 23:00:00

The lexical index is dialect-specific: a contentless FTS5 table kept in step with `kb_chunks` by
triggers on SQLite, a FULLTEXT index on `kb_chunks.text` on MySQL/MariaDB.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LONG_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql', 'mariadb')
LONG_BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb')

# contentless FTS5 over chunk text plus a `kb` token ('kb<id>'), so a search is restricted to a
# knowledge base inside the index (fast ORDER BY rank LIMIT n); triggers keep it in step
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE kb_chunks_fts USING fts5("
    "text, kb, content='', tokenize='porter unicode61 remove_diacritics 2')",
    "CREATE TRIGGER kb_chunks_fts_ai AFTER INSERT ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(rowid, text, kb) "
    "VALUES (new.id, new.text, 'kb' || new.knowledge_base_id); END",
    "CREATE TRIGGER kb_chunks_fts_ad AFTER DELETE ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text, kb) "
    "VALUES ('delete', old.id, old.text, 'kb' || old.knowledge_base_id); END",
    "CREATE TRIGGER kb_chunks_fts_au AFTER UPDATE OF text, knowledge_base_id ON kb_chunks BEGIN "
    "INSERT INTO kb_chunks_fts(kb_chunks_fts, rowid, text, kb) "
    "VALUES ('delete', old.id, old.text, 'kb' || old.knowledge_base_id); "
    "INSERT INTO kb_chunks_fts(rowid, text, kb) "
    "VALUES (new.id, new.text, 'kb' || new.knowledge_base_id); END",
    # document frequency per term, so a query can skip words that are in most chunks
    "CREATE VIRTUAL TABLE kb_chunks_vocab USING fts5vocab(kb_chunks_fts, 'row')",
]


def upgrade() -> None:
    op.create_table(
        'knowledge_bases',
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('owner_id', sa.BigInteger(), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('description', sa.Text(), nullable=False),
        sa.Column('version', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_knowledge_bases_owner_id', 'knowledge_bases', ['owner_id'])

    op.create_table(
        'agent_knowledge_bases',
        sa.Column('agent_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('knowledge_base_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('agent_id', 'knowledge_base_id'),
    )
    op.create_index('ix_agent_knowledge_bases_kb', 'agent_knowledge_bases', ['knowledge_base_id'])

    op.create_table(
        'kb_documents',
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('knowledge_base_id', sa.BigInteger(), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('media_type', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('content_hash', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('content', LONG_BLOB, nullable=False),
        sa.Column('chunks_total', sa.Integer(), nullable=False),
        sa.Column('chunks_embedded', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_kb_documents_knowledge_base_id', 'kb_documents', ['knowledge_base_id'])

    op.create_table(
        'kb_chunks',
        sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('knowledge_base_id', sa.BigInteger(), nullable=False),
        sa.Column('document_id', sa.BigInteger(), nullable=False),
        sa.Column('document_version', sa.Integer(), nullable=False),
        sa.Column('ordinal', sa.Integer(), nullable=False),
        sa.Column('text', LONG_TEXT, nullable=False),
        sa.Column('start_char', sa.Integer(), nullable=False),
        sa.Column('end_char', sa.Integer(), nullable=False),
        sa.Column('embedding', sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(
        'uq_kb_chunks_document_ordinal', 'kb_chunks', ['document_id', 'ordinal'], unique=True
    )
    op.create_index('ix_kb_chunks_kb', 'kb_chunks', ['knowledge_base_id', 'id'])

    dialect = op.get_bind().dialect.name
    if dialect == 'sqlite':
        for statement in SQLITE_FTS:
            op.execute(statement)
    elif dialect in ('mysql', 'mariadb'):
        op.execute('ALTER TABLE kb_chunks ADD FULLTEXT INDEX ft_kb_chunks_text (text)')

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('citations', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('citations')

    if op.get_bind().dialect.name == 'sqlite':
        for name in ('kb_chunks_fts_ai', 'kb_chunks_fts_ad', 'kb_chunks_fts_au'):
            op.execute(f'DROP TRIGGER IF EXISTS {name}')
        op.execute('DROP TABLE IF EXISTS kb_chunks_vocab')
        op.execute('DROP TABLE IF EXISTS kb_chunks_fts')
    op.drop_table('kb_chunks')  # drops its indexes, FULLTEXT included
    op.drop_table('kb_documents')
    op.drop_table('agent_knowledge_bases')
    op.drop_table('knowledge_bases')
