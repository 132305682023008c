"""Head office the authority for credits (#17): pinned credits, claim leases, alarms.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Before, a claim moved any credit: none was pinned, none is leased now.
    with op.batch_alter_table("credits") as credits:
        credits.add_column(
            sa.Column("pinned", sa.Boolean, nullable=False, server_default=sa.false())
        )
        credits.add_column(sa.Column("lease_until", sa.Integer))
        credits.add_column(sa.Column("claim_id", sa.String(32)))
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer),
        sa.Column("text", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("alarms")
    with op.batch_alter_table("credits") as credits:
        credits.drop_column("claim_id")
        credits.drop_column("lease_until")
        credits.drop_column("pinned")
