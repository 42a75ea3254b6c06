"""`python -m asr_core SUBCOMMAND ...` — see `python -m asr_core --help`."""
from asr_core.cli import main

raise SystemExit(main())
