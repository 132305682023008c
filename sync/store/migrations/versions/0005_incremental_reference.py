"""Reference data by change (#21): each key and debt row carries the reference version that
last changed it, so a kiosk downloads only what changed since the version it holds.

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
    for table in ("ref_keys", "ref_debts"):
        with op.batch_alter_table(table) as t:
            t.add_column(sa.Column("changed", sa.Integer))
            t.create_index(f"ix_{table}_changed", ["changed"])
        # what is there now came with the version the fleet holds already
        op.execute(f"UPDATE {table} SET changed = COALESCE((SELECT version FROM ref_version), 1)")


def downgrade() -> None:
    for table in ("ref_keys", "ref_debts"):
        with op.batch_alter_table(table) as t:
            t.drop_index(f"ix_{table}_changed")
            t.drop_column("changed")
