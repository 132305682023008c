"""The facts head office decides a credit on (#34): the key's write number below which the
credit cannot be on the key (`bound`), the write number a kiosk reported writing it as
(`write_no`) and whether the key has shown it there (`confirmed`: a close by a kiosk that did
not take the money stands only once another kiosk read the key's log), every kiosk a credit was ever granted to (`credit_grants`: only they may say
they wrote it), and every write a kiosk reported on a key (`key_writes`: two reports of one
write number that disagree are an alarm, and a close that the key contradicts is undone).
Reference versions count on from the clock (a database restored from a backup never gives a
version it gave before), so they need 64 bits.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credits") as credits:
        credits.add_column(sa.Column("bound", sa.Integer))
        credits.add_column(sa.Column("write_no", sa.Integer))
        credits.add_column(sa.Column("confirmed", sa.Boolean, nullable=False,
                                     server_default=sa.true()))  # fmt: skip
    op.create_table(
        "credit_grants",
        sa.Column("credit_id", sa.String(64), primary_key=True),
        sa.Column("kiosk_id", sa.String(64), primary_key=True),
    )
    op.create_table(
        "key_writes",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("write_no", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("txid", sa.String(64), nullable=False),
        sa.Column("kiosk_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
    )
    conn = op.get_bind()
    # a kiosk's credit open at the upgrade: no bound known, so the most careful one (the key's
    # log must reach back to its first write); an office credit gets its bound at its next claim
    conn.execute(sa.text("UPDATE credits SET bound = 0 WHERE origin != 'office'"))
    # what granted a credit until now: its origin and its holder
    conn.execute(sa.text(
        "INSERT INTO credit_grants (credit_id, kiosk_id) SELECT credit_id, origin FROM credits "
        "WHERE origin != 'office'"))  # fmt: skip
    conn.execute(sa.text(
        "INSERT INTO credit_grants (credit_id, kiosk_id) SELECT credit_id, holder FROM credits "
        "WHERE holder IS NOT NULL AND holder != origin"))  # fmt: skip
    with op.batch_alter_table("ref_version") as ref_version:
        ref_version.alter_column("version", type_=sa.BigInteger, existing_nullable=False)
    for table in ("ref_keys", "ref_debts"):
        with op.batch_alter_table(table) as t:
            t.alter_column("changed", type_=sa.BigInteger, existing_nullable=True)


def downgrade() -> None:
    for table in ("ref_keys", "ref_debts"):
        with op.batch_alter_table(table) as t:
            t.alter_column("changed", type_=sa.Integer, existing_nullable=True)
    with op.batch_alter_table("ref_version") as ref_version:
        ref_version.alter_column("version", type_=sa.Integer, existing_nullable=False)
    op.drop_table("key_writes")
    op.drop_table("credit_grants")
    with op.batch_alter_table("credits") as credits:
        credits.drop_column("confirmed")
        credits.drop_column("write_no")
        credits.drop_column("bound")
