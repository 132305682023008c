import sys

from sync.admin.cli import main

sys.exit(main())
