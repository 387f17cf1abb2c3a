"""`python -m gateway.cli`: the `brandgate` command."""

import sys

from gateway.cli.main import main

sys.exit(main())
