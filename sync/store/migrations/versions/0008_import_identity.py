"""Billing files' rows already taken, so that a file imported again changes nothing (a retried
night job): each row is known by the billing system's `ref` when its file carries one, else by
the file's digest and the row's line.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imported",
        sa.Column("identity", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ref", sa.String(64)),
        sa.Column("content", sa.String(64), nullable=False),
        sa.Column("credit_id", sa.String(64)),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("imported")
