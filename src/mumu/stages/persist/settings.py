"""Settings of the persist stage (``MUMU_PERSIST__*``)."""

from pydantic import BaseModel, Field


class PersistSettings(BaseModel):
    batch_rows: int = Field(default=256, ge=1, description="rows written per transaction")
