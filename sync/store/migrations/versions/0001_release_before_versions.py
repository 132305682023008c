"""Head office's schema as released before schema versions (commit d0ff24d).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kiosks",
        sa.Column("kiosk_id", sa.String(64), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    )
    op.create_table(
        "entries",
        sa.Column("kiosk_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("txid", sa.String(64)),
        sa.Column("key", sa.String(64)),
        sa.Column("amount", sa.Integer),
        sa.Column("currency", sa.String(3)),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "ref_keys",
        sa.Column("serial", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("contract_account", sa.String(64)),
    )
    op.create_table(
        "ref_debts",
        sa.Column("contract_account", sa.String(64), primary_key=True),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
    )
    op.create_table(
        "credits",
        sa.Column("credit_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("amount", sa.Integer, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("written_by", sa.String(64)),
    )
    op.create_index("ix_credits_key", "credits", ["key"])
    op.create_table(
        "settings",
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.create_table(
        "ref_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    for table in ("ref_version", "settings", "credits", "ref_debts", "ref_keys", "entries",
                  "kiosks"):  # fmt: skip
        op.drop_table(table)
