"""`python -m lmforge` is the `lmforge` command."""

from lmforge.cli import main

raise SystemExit(main())
