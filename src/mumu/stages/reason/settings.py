"""Settings of the reason stage (``MUMU_REASON__*``)."""

from pydantic import BaseModel, Field


class ReasonSettings(BaseModel):
    backend: str = Field(default="llama_cpp", description="`llama_cpp` or `openai`")
