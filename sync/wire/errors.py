"""Exception root of the sync package (the kiosk's client and head office's server)."""

from __future__ import annotations


class HeadOfficeError(Exception):
    """Root of every error the sync package raises on purpose."""
