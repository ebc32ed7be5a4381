"""``python -m confroute`` runs the command line."""

from confroute.cli import main

raise SystemExit(main())
