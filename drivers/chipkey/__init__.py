"""The chip key: a DESFire EV1 value-file application over PC/SC, and a virtual card."""
