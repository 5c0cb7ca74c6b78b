"""The tier runner on an injected clock: timing, the refused key, stopping, run slots."""
