"""What the database layer needs to know: its URLs and the application pool's limits.

Built from ``Settings`` (``Settings.database``); the environment names stay where users
know them: ``MUMU_DATABASE_URL``, ``MUMU_DATABASE_ADMIN_URL``, ``MUMU_PERSIST__POOL_*``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, SecretStr


class DatabaseSettings(BaseModel):
    """The database layer's own settings; no other part of ``Settings`` reaches ``db``."""

    model_config = ConfigDict(frozen=True)

    url: SecretStr | None = None
    """The application role (``NOSUPERUSER NOBYPASSRLS``)."""
    admin_url: SecretStr | None = None
    """The owner role, for migrations and administration."""
    pool_min: int = 0
    pool_max: int = 8
    connect_timeout: float = 5.0
    command_timeout: float = 30.0
