"""``mumu up``: everything in one process tree on an embedded NATS and PostgreSQL."""
