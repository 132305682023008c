"""Head office's acknowledged hash is there whenever the watermark says head office holds entries
(#34: `verify` refuses a journal whose anchor was removed). A journal synced by a release before
the anchor was kept has a watermark and no anchor: it is given the journal's own entry at the
watermark as its anchor (head office acknowledged that entry, by number: its answer did not say
the hash then), until the next upload puts head office's hash in its place.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO meta (name, value) SELECT 'sync_anchor', w.value || ' ' || j.hash "
        "FROM meta w JOIN journal j ON j.seq = CAST(w.value AS INTEGER) "
        "WHERE w.name = 'sync_watermark' AND CAST(w.value AS INTEGER) > 0 "
        "AND NOT EXISTS (SELECT 1 FROM meta WHERE name = 'sync_anchor')"
    )
    op.execute(
        "INSERT INTO meta (name, value) SELECT 'sync_anchor', w.value || ' ' || b.hash "
        "FROM meta w JOIN journal_base b ON b.seq = CAST(w.value AS INTEGER) "
        "WHERE w.name = 'sync_watermark' AND CAST(w.value AS INTEGER) > 0 "
        "AND NOT EXISTS (SELECT 1 FROM meta WHERE name = 'sync_anchor')"
    )


def downgrade() -> None:
    pass  # (an anchor an older release does not read)
