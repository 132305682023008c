"""A technician's key: the PIN, the diagnostics, the acceptor test."""

from __future__ import annotations

from kiosk.domain.events import (
    AcceptorTest,
    Command,
    Event,
    KeyRemoved,
    Kind,
    PinChecked,
    Record,
)
from kiosk.domain.session import (
    SessionCore,
)
from kiosk.domain.table import State


class Technician(SessionCore):
    """See the module; the state it works on is `SessionCore`'s."""

    def on_pin_checked(self, ev: PinChecked) -> list[Command]:
        """The kiosk checked the PIN (and journaled the attempt)."""
        if ev.ok:
            self.state = State.DIAGNOSTICS
            self._deadline(None)
            self._notice(None)
            return []
        if ev.locked_until is not None:
            self._notice("pin_locked", until=ev.locked_until.isoformat())
        else:
            self._notice("pin_wrong")
        self._deadline(self.site.timeouts.choose)
        return []

    def on_acceptor_test(self, ev: AcceptorTest) -> list[Command]:
        self._ctx.test_mode = ev.on
        return []

    def on_leave_diagnostics(self, _ev: Event) -> list[Command]:
        c = self._ctx
        cmds: list[Command] = []
        if self.state == State.DIAGNOSTICS:
            assert c.key is not None
            cmds.append(
                Record(
                    Kind.AUDIT,
                    data={
                        "action": "exited",
                        "who": f"key {c.key.serial}",
                        "key_removed": isinstance(_ev, KeyRemoved),
                    },
                )
            )
        return cmds + self._to_rest()
