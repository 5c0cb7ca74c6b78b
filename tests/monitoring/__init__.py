"""Health and metrics: the health rules, /healthz and /metrics fed by real polls and deliveries."""
