"""An index on the journal's kinds: the PIN lockout, the cash box and the acceptor counters
read entries of a few kinds, and without it every look read the whole journal (#18).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_journal_kind", "journal", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_journal_kind", "journal")
