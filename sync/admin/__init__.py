"""Head office's admin command: `python -m sync.admin --db URL COMMAND`."""

from sync.admin.cli import main, report

__all__ = ["main", "report"]
