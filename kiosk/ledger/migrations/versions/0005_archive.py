"""Housekeeping (#18): where the live journal begins once older entries moved into archive
segments (the last archived entry's number and hash: the live chain continues from it), and
the ids of the pending credits that went with them (a credit head office sends again is still
known here). Empty in a journal that was never archived.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_base",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "archived_credits",
        sa.Column("txid", sa.String(64), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("archived_credits")
    op.drop_table("journal_base")
