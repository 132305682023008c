"""Each kiosk's chain secret (#34): its journal's entries are hashed with HMAC-SHA256 under it,
so that whoever can write a kiosk's journal file cannot edit an entry and compute its hashes
again. Head office keeps the secret (`sync.admin register` makes it) and the first keyed entry
it took of the kiosk (`keyed_from`: plain entries before it, none after it). Kiosks registered
before have none (NULL): their entries stay plain SHA-256 until they are registered again.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kiosks") as kiosks:
        kiosks.add_column(sa.Column("chain_secret", sa.String(64)))
        kiosks.add_column(sa.Column("keyed_from", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("kiosks") as kiosks:
        kiosks.drop_column("keyed_from")
        kiosks.drop_column("chain_secret")
