"""``mumu config show`` prints the effective settings and never a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def config_show(env: dict[str, str]) -> tuple[str, dict[str, object]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUMU_")}
    done = subprocess.run(
        [sys.executable, "-m", "mumu", "config", "show"], env=clean | env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout, json.loads(done.stdout)


def test_config_show_hides_the_password_of_a_nats_url_and_every_secret() -> None:
    out, shown = config_show({
        "MUMU_NATS__URL": "nats://mumu:n4ts-pw@nats.example:4222,nats://mumu:n4ts-pw@nats2:4222",
        "MUMU_NATS__PASSWORD": "other-pw",
        "MUMU_DATABASE_URL": "postgresql://app:db-pw@pg/mumu",
        "MUMU_MASTER_KEYS": "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "MUMU_OTLP_ENDPOINT": "https://user:otlp-pw@collector:4318",
        "MUMU_REASON__OPENAI__API_KEY": "sk-secret",
    })
    for secret in ("n4ts-pw", "other-pw", "db-pw", "AAAAAAAA", "otlp-pw", "sk-secret"):
        assert secret not in out
    nats = shown["nats"]
    assert isinstance(nats, dict)
    # still useful: who and where, only the password is masked
    assert nats["url"] == "nats://mumu:***@nats.example:4222,nats://mumu:***@nats2:4222"
    assert shown["otlp_endpoint"] == "https://user:***@collector:4318"


def test_config_show_leaves_urls_without_a_password_as_they_are() -> None:
    _, shown = config_show({"MUMU_NATS__URL": "nats://nats.example:4222"})
    nats = shown["nats"]
    assert isinstance(nats, dict)
    assert nats["url"] == "nats://nats.example:4222"
