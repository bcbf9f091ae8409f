"""`python -m hiperfifo`: the same as the `hiperfifo` command (cli.main)."""

import sys

from hiperfifo.cli import main

sys.exit(main())
