"""``python -m confroute.bench run|report ...``."""

from confroute.bench.cli import main

raise SystemExit(main())
