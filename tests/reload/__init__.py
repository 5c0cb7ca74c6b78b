"""Reloading the configuration (SIGHUP) while the daemon runs: what changes, what is kept."""
