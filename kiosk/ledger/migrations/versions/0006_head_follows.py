"""An append in one statement (#23): what each entry keeps up to date beside it, in the same
transaction, is written by SQLite itself (triggers on the journal) instead of by further
statements from the kiosk: the head (the newest entry's number and hash), the cash box's count
(a coin or note in, the box emptied) and each cash device's last event counter. The kiosk keeps
the head it last wrote and learns of another writer's entry from the insert that collides with
it (the entry number is the journal's key).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: the kinds at this revision (a migration keeps its own copy): into the cash box, and those
#: that may carry a cash device's event counter
INTO_THE_BOX = "('cash_in', 'cash_unattributed', 'test_cash')"
COUNTED = "('cash_in', 'cash_unattributed', 'test_cash', 'fault', 'acceptor_counter')"

TRIGGERS = {
    "journal_head_follows": (
        "AFTER INSERT ON journal BEGIN "
        "INSERT OR REPLACE INTO journal_head (id, seq, hash) VALUES (1, NEW.seq, NEW.hash); END"
    ),
    "journal_cash_counted": (
        f"AFTER INSERT ON journal WHEN NEW.kind IN {INTO_THE_BOX} AND NEW.amount IS NOT NULL "
        "BEGIN INSERT INTO cash_box (medium, minor, pieces, test_minor) VALUES ("
        "coalesce(json_extract(NEW.data, '$.medium'), 'coin'), NEW.amount, 1, "
        "CASE WHEN NEW.kind = 'test_cash' THEN NEW.amount ELSE 0 END) "
        "ON CONFLICT (medium, minor) DO UPDATE SET pieces = pieces + 1, "
        "test_minor = test_minor + excluded.test_minor; END"
    ),
    "journal_cash_emptied": (
        "AFTER INSERT ON journal WHEN NEW.kind = 'cashbox_emptied' BEGIN DELETE FROM cash_box; END"
    ),
    "journal_counter_kept": (
        f"AFTER INSERT ON journal WHEN NEW.kind IN {COUNTED} "
        "AND json_extract(NEW.data, '$.counter') IS NOT NULL "
        "BEGIN INSERT INTO acceptor_counters (device, counter) VALUES ("
        "coalesce(nullif(json_extract(NEW.data, '$.device'), ''), "
        "CASE WHEN json_extract(NEW.data, '$.medium') = 'note' THEN 'notes' ELSE 'coin' END), "
        "json_extract(NEW.data, '$.counter')) "
        "ON CONFLICT (device) DO UPDATE SET counter = excluded.counter; END"
    ),
}


def upgrade() -> None:
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}")
