"""Networks the bundles build from ``network_def``."""
