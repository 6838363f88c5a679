"""Settings of the persist stage and the application pool (``MUMU_PERSIST__*``)."""

from pydantic import BaseModel, Field


class PersistSettings(BaseModel):
    batch_rows: int = Field(
        default=256, ge=1, le=1000,
        description="most messages fetched and written as one batch (one transaction per "
        "workspace in it); a quiet stage writes what is waiting without waiting to fill one",
    )
    writers: int = Field(
        default=4, ge=1,
        description="transactions written at the same time (one connection each); "
        "batch_rows x writers messages are in flight at most",
    )
    pool_min: int = Field(
        default=0, ge=0,
        description="connections the application pool opens at start; 0 lets the stage start "
        "while PostgreSQL is down (it connects on first use and retries until it can)",
    )
    pool_max: int = Field(default=8, ge=1, description="connections the application pool opens")
    connect_timeout: float = Field(
        default=5.0, gt=0, description="seconds to wait for a PostgreSQL connection"
    )
    command_timeout: float = Field(
        default=30.0, gt=0, description="seconds a single SQL statement may take"
    )
    retry_max_delay: float = Field(
        default=5.0, gt=0,
        description="longest wait between database checks while a message is held on its "
        "last delivery (the database is down; it is never dead-lettered for that)",
    )
    key_hold_limit: float = Field(
        default=300.0, gt=0,
        description="longest a message is held on its last delivery because its workspace's "
        "data key cannot be unwrapped (a master key missing from this process's keyring); "
        "then it is dead-lettered (`mumu dlq replay` brings it back once the key unwraps), "
        "so one tenant's key trouble never keeps the stage's in-flight slots",
    )
    key_held_per_workspace: int = Field(
        default=64, ge=1,
        description="most messages of one workspace held at once for its data key; one "
        "more is dead-lettered at once (the same way as at the hold limit), so one "
        "tenant's key trouble never takes more than this many in-flight slots",
    )
