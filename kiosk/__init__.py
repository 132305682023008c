"""The prepaid top-up automat: engine, journal, services, UI and CLI."""
