"""Every bucket constant of the contracts is declared in streams/buckets.json, and only those."""

from __future__ import annotations

from mumu.broker.streams import load_bucket_configs
from mumu.contracts import subjects


def test_every_bucket_constant_is_declared_once_and_nothing_else_is() -> None:
    declared = [spec["bucket"] for specs in load_bucket_configs().values() for spec in specs]
    constants = {v for k, v in vars(subjects).items() if k.startswith("BUCKET_")}
    assert sorted(declared) == sorted(constants)
    assert subjects.BUCKET_ONCE in declared


def test_once_records_are_small_and_expire_with_the_inputs() -> None:
    (once,) = [s for s in load_bucket_configs()["key_value"]
               if s["bucket"] == subjects.BUCKET_ONCE]
    assert once["history"] == 1 and once["max_value_size"] <= 256
    assert once["ttl_seconds"] >= 86_400  # an input may be redelivered while MUMU_INGEST keeps it
    assert once["max_bytes"] > 0
