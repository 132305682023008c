"""What is still open, kept beside the journal: transactions opened and not closed, pending
credits not written or released. The start-up reconciliation and a key's pending credits read
these few rows instead of the whole history (#18); filled here from the journal as it is.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "open_tx",
        sa.Column("txid", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    op.create_table(
        "open_credits",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("txid", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64)),
    )
    op.create_index("ix_open_credits_txid", "open_credits", ["txid"])
    op.create_index("ix_open_credits_key", "open_credits", ["key"])
    op.execute(
        "INSERT INTO open_tx (txid, seq) SELECT txid, MIN(seq) FROM journal "
        "WHERE kind = 'tx_opened' AND txid IS NOT NULL AND txid NOT IN "
        "(SELECT txid FROM journal WHERE kind = 'tx_closed' AND txid IS NOT NULL) GROUP BY txid"
    )
    op.execute(
        "INSERT INTO open_credits (seq, txid, key) SELECT seq, txid, key FROM journal "
        "WHERE kind = 'pending_credit' AND txid IS NOT NULL AND txid NOT IN "
        "(SELECT txid FROM journal WHERE kind IN ('pending_written', 'pending_released') "
        "AND txid IS NOT NULL)"
    )


def downgrade() -> None:
    op.drop_table("open_credits")
    op.drop_table("open_tx")
