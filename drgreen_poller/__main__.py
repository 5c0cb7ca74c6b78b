"""Allows ``python -m drgreen_poller``; it only hands over to the CLI."""

from drgreen_poller.cli import main

raise SystemExit(main())
