"""The prepaid top-up automat. Its layers, inside out: domain (rules), ledger (journal),
documents, app (ports, runner, composition root), adapters (devices, head office), service
(technician and office tools), ui (the touch screen), cli (the `kiosk` command) and sim (for
simulation and demonstration only)."""
