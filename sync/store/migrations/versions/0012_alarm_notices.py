"""Alarms reach a person (#37): each stored alarm has a kind (chain, clock, credit) by which
the operator routes it, and `notices` remembers what was told to whom and when (so a restart
tells nothing twice and a condition still open is told again only by its resend rule).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alarms") as alarms:
        alarms.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                    server_default="credit"))  # fmt: skip
    op.create_table(
        "notices",
        sa.Column("alarm", sa.String(200), primary_key=True),
        sa.Column("channel", sa.String(200), primary_key=True),
        sa.Column("first_seen", sa.String(32), nullable=False),
        sa.Column("last_sent", sa.String(32)),
        sa.Column("sent", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cleared", sa.String(32)),
        sa.Column("failed", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("notices")
    with op.batch_alter_table("alarms") as alarms:
        alarms.drop_column("kind")
