"""Every bucket constant of the contracts is declared in streams/buckets.json, and only
those; the per-workspace once records are small and outlive their inputs."""

from __future__ import annotations

from mumu.broker.streams import load_bucket_configs
from mumu.broker.workspaces import once_bucket_spec
from mumu.contracts import subjects


def test_every_bucket_constant_is_declared_once_and_nothing_else_is() -> None:
    declared = [spec["bucket"] for specs in load_bucket_configs().values() for spec in specs]
    constants = {v for k, v in vars(subjects).items() if k.startswith("BUCKET_")}
    assert sorted(declared) == sorted(constants)


def test_once_records_are_small_and_expire_with_the_inputs() -> None:
    once = once_bucket_spec("ws-a")
    assert once["bucket"] == "mumu-once-ws-a"
    assert once["history"] == 1 and once["max_value_size"] == 256
    assert once["ttl_seconds"] == 86_400  # an input may be redelivered while MUMU_INGEST keeps it
    assert once["max_bytes"] == 32 * 1024 * 1024
