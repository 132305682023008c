"""What each kiosk has not delivered yet, as it says with every request (#21, the fleet page).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kiosks") as kiosks:
        kiosks.add_column(sa.Column("backlog", sa.Integer))
        kiosks.add_column(sa.Column("backlog_since", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("kiosks") as kiosks:
        kiosks.drop_column("backlog_since")
        kiosks.drop_column("backlog")
