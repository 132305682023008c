"""Exception root of the drivers package."""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error a driver raises on purpose."""


class TransportError(DriverError):
    """The port cannot be opened, read or written."""


class FrameError(DriverError, ValueError):
    """Bytes that are not a valid frame: checksum, CRC, length or shape."""


class DeviceError(DriverError):
    """The device answered, but with a refusal or a fault (NAK, error reply, fault code)."""


class DeviceTimeout(DriverError):
    """The device did not answer in time, after the retries."""
