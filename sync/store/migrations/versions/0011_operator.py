"""What an operator runs head office by (#37): each kiosk's registration, token age, revocation
and the version it reports; each staff member's language, whether they are disabled and when
their password was set; and the audit's who, through what, on what, before and after.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("kiosks") as kiosks:
        kiosks.add_column(sa.Column("registered", sa.String(32)))
        kiosks.add_column(sa.Column("token_since", sa.String(32)))
        kiosks.add_column(sa.Column("revoked", sa.String(32)))
        kiosks.add_column(sa.Column("version", sa.String(40)))
        kiosks.add_column(sa.Column("journal_schema", sa.String(40)))
    with op.batch_alter_table("staff") as staff:
        staff.add_column(sa.Column("lang", sa.String(5), nullable=False, server_default="de"))
        staff.add_column(sa.Column("disabled", sa.String(32)))
        staff.add_column(sa.Column("password_set", sa.String(32)))
    with op.batch_alter_table("audit") as audit:
        audit.add_column(sa.Column("via", sa.String(16), nullable=False, server_default=""))
        audit.add_column(sa.Column("target", sa.String(128), nullable=False, server_default=""))
        audit.add_column(sa.Column("before", sa.Text))
        audit.add_column(sa.Column("after", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("audit") as audit:
        for name in ("after", "before", "target", "via"):
            audit.drop_column(name)
    with op.batch_alter_table("staff") as staff:
        for name in ("password_set", "disabled", "lang"):
            staff.drop_column(name)
    with op.batch_alter_table("kiosks") as kiosks:
        for name in ("journal_schema", "version", "revoked", "token_since", "registered"):
            kiosks.drop_column(name)
