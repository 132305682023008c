"""Housekeeping (#18): where the live journal begins once older entries moved into archive
segments (the last archived entry's number and hash: the live chain continues from it), and
the ids of the pending credits that went with them (a credit head office sends again is still
known here); both empty in a journal that was never archived. And each cash device's last
event counter, kept in the same commit as its entries (read at every start, it was a search
back through the history); filled here from the history as it is.

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
    op.create_table(
        "acceptor_counters",
        sa.Column("device", sa.String(16), primary_key=True),
        sa.Column("counter", sa.Integer, nullable=False),
    )
    # the newest counter of each device (SQLite takes the bare columns from the MAX row)
    op.execute(
        "INSERT INTO acceptor_counters (device, counter) SELECT device, counter FROM ("
        "SELECT COALESCE(json_extract(data, '$.device'), CASE WHEN json_extract(data, "
        "'$.medium') = 'note' THEN 'notes' ELSE 'coin' END) AS device, "
        "CAST(json_extract(data, '$.counter') AS INTEGER) AS counter, MAX(seq) FROM journal "
        "WHERE kind IN ('cash_in', 'cash_unattributed', 'test_cash', 'fault', "
        "'acceptor_counter') AND json_extract(data, '$.counter') IS NOT NULL GROUP BY 1)"
    )


def downgrade() -> None:
    op.drop_table("acceptor_counters")
    op.drop_table("archived_credits")
    op.drop_table("journal_base")
