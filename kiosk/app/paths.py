"""Where the kiosk keeps its state: one data directory for journal, logs, keys, screenshots."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "prepaid-kiosk"


def data_dir(override: str | Path | None = None) -> Path:
    """`override`, else ``KIOSK_DATA_DIR``, else the per-user data directory; created if missing."""
    chosen = override or os.environ.get("KIOSK_DATA_DIR") or platformdirs.user_data_dir(APP_NAME)
    path = Path(chosen).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def journal_path(base: Path, kiosk_id: str) -> Path:
    return base / f"journal-{kiosk_id}.sqlite"
