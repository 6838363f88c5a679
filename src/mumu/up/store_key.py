"""At-rest encryption of the embedded JetStream store: its key, and a store it cannot open.

Secure by default: with no ``MUMU_NATS__JS_KEY``, ``mumu up`` generates a key once into
``<data dir>/nats-js-key`` (mode 0600) and starts nats-server with a cipher. The key goes
to the server through its environment only (``key: $NATS_JS_KEY`` in the config).

Upgrades: nats-server encrypts an existing unencrypted store when it first starts with a
cipher. A store encrypted with a key that is lost does not load, and nats-server then
carries on without those streams; ``check_store_loaded`` stops ``mumu up`` before it would
create empty streams in their place.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NATS

from mumu.broker.embedded import Cipher, EmbeddedNats
from mumu.broker.settings import NatsSettings

log = logging.getLogger(__name__)

KEY_FILE = "nats-js-key"
USER_INFO = "$SYS.REQ.USER.INFO"
USER_INFO_TIMEOUT = 2.0


class StoreKeyError(RuntimeError):
    """The embedded store cannot be opened with the key at hand."""


def _stored(store_dir: Path) -> list[Path]:
    """The stream directories of the store (every account)."""
    return sorted(p for p in store_dir.glob("jetstream/*/streams/*") if p.is_dir())


def store_key(settings: NatsSettings, data_dir: Path, store_dir: Path) -> tuple[Cipher, str] | None:
    """The cipher and key of the embedded server, or ``None`` when encryption is off."""
    stored = _stored(store_dir)
    encrypted = [p for p in stored if (p / "meta.key").exists()]
    if settings.js_cipher == "none":
        if encrypted:
            raise StoreKeyError(
                f"the JetStream store in {store_dir} is encrypted; MUMU_NATS__JS_CIPHER=none "
                "cannot open it (set the cipher and key it was written with)"
            )
        return None
    cipher: Cipher = settings.js_cipher
    if settings.js_key is not None:
        key = settings.js_key.get_secret_value()
    else:
        path = data_dir / KEY_FILE
        if not path.exists():
            if encrypted:
                raise StoreKeyError(
                    f"the JetStream store in {store_dir} is encrypted but its key file {path} "
                    "is missing: restore it (or set MUMU_NATS__JS_KEY), or move the store "
                    "away to start with empty streams"
                )
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
            log.info("generated the JetStream encryption key in %s", path)
        key = path.read_text().strip()
    if len(encrypted) < len(stored):
        log.info("nats-server encrypts the existing unencrypted streams in %s (once)", store_dir)
    return cipher, key


async def _account(nc: NATS) -> str | None:
    """The account of this connection (``$SYS.REQ.USER.INFO``), or None if not allowed."""
    try:
        reply = await nc.request(USER_INFO, b"", timeout=USER_INFO_TIMEOUT)
        account = json.loads(reply.data)["data"]["account"]
    except (nats.errors.Error, TimeoutError, ValueError, KeyError, TypeError):
        return None
    return str(account) if account else None


async def check_store_loaded(nc: NATS, server: EmbeddedNats) -> None:
    """Every stream stored on disk for this connection's account was opened by the server
    (else: a wrong key). Streams of other accounts are not visible here and not checked."""
    account = await _account(nc)
    on_disk = {p.name for p in _stored(server.store_dir)
               if account is None or p.parent.parent.name == account}
    missing = on_disk - {info.config.name for info in await nc.jetstream().streams_info()}
    if missing:
        raise StoreKeyError(
            f"nats-server could not open the streams {', '.join(sorted(missing))} of "
            f"{server.store_dir}: written with another key or cipher? "
            f"(see {server.data_dir / 'nats-server.log'})"
        )
