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


def test_the_narrow_settings_come_from_the_public_variables(monkeypatch) -> None:
    from mumu.settings import Settings

    for name, value in {
        "MUMU_DATABASE_URL": "postgresql://app:pw@pg/mumu",
        "MUMU_DATABASE_ADMIN_URL": "postgresql://owner:pw@pg/mumu",
        "MUMU_PERSIST__POOL_MIN": "2", "MUMU_PERSIST__POOL_MAX": "9",
        "MUMU_PERSIST__CONNECT_TIMEOUT": "3.5", "MUMU_PERSIST__COMMAND_TIMEOUT": "12",
        "MUMU_NATS__URL": "nats://n:4222", "MUMU_NATS__CONNECT_TIMEOUT": "2",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    db = settings.database
    assert db.url is not None and db.url.get_secret_value() == "postgresql://app:pw@pg/mumu"
    assert db.admin_url is not None
    assert db.admin_url.get_secret_value() == "postgresql://owner:pw@pg/mumu"
    assert (db.pool_min, db.pool_max, db.connect_timeout, db.command_timeout) == (2, 9, 3.5, 12.0)
    assert (settings.nats.url, settings.nats.connect_timeout) == ("nats://n:4222", 2.0)
