"""Why a key is blocked, as a code the automat translates (#24), and a note for the staff.

Until now `ref_keys.reason` was free text typed by staff ("lost", "Kunde verzogen") and went to
the customer's screen as it was. A reason that is one of the codes stays; any other text moves
to the new `note` (kept at head office, never sent to a kiosk) and the reason becomes "" (the
automat then says neutrally where to go). The keys whose reason changed are stamped with a new
reference version so that every kiosk takes the change at its next look.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: the codes of sync.protocol.KeyReason at this revision (a migration keeps its own copy)
CODES = ("lost", "stolen", "defective", "replaced", "contract_ended", "deposit_unpaid",
         "not_activated", "under_review")  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("ref_keys") as keys:
        keys.add_column(sa.Column("note", sa.Text, nullable=False, server_default=""))
    conn = op.get_bind()
    ref_keys = sa.table(
        "ref_keys", sa.column("serial"), sa.column("reason"), sa.column("note"),
        sa.column("changed"),
    )  # fmt: skip
    ref_version = sa.table("ref_version", sa.column("version"))
    moved = conn.execute(
        sa.select(ref_keys.c.serial, ref_keys.c.reason).where(
            ref_keys.c.reason != "", ref_keys.c.reason.not_in(CODES)
        )
    ).all()
    if not moved:
        return
    conn.execute(ref_version.update().values(version=ref_version.c.version + 1))
    new = conn.execute(sa.select(ref_version.c.version)).scalar_one()
    for serial, reason in moved:
        conn.execute(
            ref_keys.update()
            .where(ref_keys.c.serial == serial)
            .values(note=reason, reason="", changed=new)
        )


def downgrade() -> None:
    with op.batch_alter_table("ref_keys") as keys:
        keys.drop_column("note")
