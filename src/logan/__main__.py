"""`python -m logan <command> ...`: the same as the `logan` command."""

import sys

from logan.cli import main

sys.exit(main())
