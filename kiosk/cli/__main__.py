"""`python -m kiosk.cli`: the `kiosk` command."""

from kiosk.cli.main import main

raise SystemExit(main())
