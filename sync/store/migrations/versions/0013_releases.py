"""Releases rolled out from head office (#38): the utility's release public key head office
trusts, the release files it stores (verified with that key), the rollouts (canaries first,
the rest after a delay) and each kiosk's newest reported update state.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_key",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("trusted", sa.String(32), nullable=False),
    )
    op.create_table(
        "releases",
        sa.Column("version", sa.String(40), primary_key=True),
        sa.Column("file", sa.String(128), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("added", sa.String(32), nullable=False),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("canaries", sa.Text, nullable=False),
        sa.Column("after_seconds", sa.Integer, nullable=False),
        sa.Column("started", sa.String(32), nullable=False),
    )
    op.create_table(
        "kiosk_releases",
        sa.Column("kiosk_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ts", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("seq", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("kiosk_releases")
    op.drop_table("rollouts")
    op.drop_table("releases")
    op.drop_table("release_key")
