"""This release's version: written in one place (pyproject.toml), read from the installed
package's metadata by the kiosk, head office and the version each kiosk reports."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed

DISTRIBUTION = "prepaid-kiosk"


def version() -> str:
    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"
