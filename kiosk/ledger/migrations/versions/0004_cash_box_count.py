"""The cash box's running count (#18): what went in since the last emptying, by medium and
denomination, kept in the same commit as the money's entry instead of read from the history
at each look; filled here from the entries after the last emptying.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cash_box",
        sa.Column("medium", sa.String(8), primary_key=True),
        sa.Column("minor", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("pieces", sa.Integer, nullable=False),
        sa.Column("test_minor", sa.Integer, nullable=False),
    )
    op.execute(
        "INSERT INTO cash_box (medium, minor, pieces, test_minor) "
        "SELECT COALESCE(json_extract(data, '$.medium'), 'coin'), amount, COUNT(*), "
        "SUM(CASE WHEN kind = 'test_cash' THEN amount ELSE 0 END) FROM journal "
        "WHERE kind IN ('cash_in', 'cash_unattributed', 'test_cash') AND amount IS NOT NULL "
        "AND seq > (SELECT COALESCE(MAX(seq), 0) FROM journal WHERE kind = 'cashbox_emptied') "
        "GROUP BY 1, 2"
    )


def downgrade() -> None:
    op.drop_table("cash_box")
