"""PostgreSQL access: migrations, the application pool, tenancy (RLS) and encrypted rows.

Public entry points other packages use:

* ``mumu.db.pool.create_app_pool(settings.database)`` and ``mumu.db.pool.workspace_tx(pool, ws)``;
* ``mumu.db.workspaces.resolve_api_key`` / ``workspace_exists``;
* ``mumu.db.history.session_history``;
* ``mumu.db.bootstrap.bootstrap`` (``mumu up``).
"""
