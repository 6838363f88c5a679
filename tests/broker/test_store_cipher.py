"""The embedded nats-server encrypts its JetStream store with the cipher and key it is
given; the key never lands in a file; upgrades and lost keys are handled by ``mumu up``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nats
import pytest
from pydantic import SecretStr

from mumu.broker.embedded import Cipher, EmbeddedNats
from mumu.broker.settings import NatsSettings
from mumu.up.store_key import KEY_FILE, StoreKeyError, check_store_loaded, store_key

SECRET_WORD = b"Zanzibarfish"
KEY = "1e5-looks-like-a-number"  # nats-server parses variables: this must stay a string


async def put(server: EmbeddedNats) -> None:
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(name="S", subjects=["s.>"])
    await js.publish("s.one", b"about the " + SECRET_WORD)
    await nc.drain()


async def read(server: EmbeddedNats) -> bytes:
    nc = await nats.connect(server.url)
    try:
        return (await nc.jetstream().get_msg("S", 1)).data or b""
    finally:
        await nc.drain()


def files_with(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.lower()
            in p.read_bytes().lower()]


@pytest.mark.parametrize("cipher", ["chachapoly", "aes"])
async def test_the_store_is_encrypted_and_the_key_is_in_no_file(
    tmp_path: Path, cipher: Cipher
) -> None:
    server = EmbeddedNats(tmp_path / "nats", cipher=cipher, key=KEY)
    async with server:
        await put(server)
        assert await read(server) == b"about the " + SECRET_WORD
    assert files_with(server.store_dir, SECRET_WORD) == []
    assert list(server.store_dir.rglob("meta.key"))  # the stream has its own wrapped key
    config = (server.data_dir / "nats-server.conf").read_text()
    assert f"cipher: {cipher}" in config and "key: $NATS_JS_KEY" in config
    assert files_with(tmp_path, KEY.encode()) == []  # not in the config, the log, the store
    async with EmbeddedNats(tmp_path / "nats", cipher=cipher, key=KEY) as again:
        assert await read(again) == b"about the " + SECRET_WORD


async def test_an_unencrypted_store_is_encrypted_when_the_cipher_is_turned_on(
    tmp_path: Path,
) -> None:
    async with EmbeddedNats(tmp_path / "nats") as plain:
        await put(plain)
    assert files_with(plain.store_dir, SECRET_WORD)  # the word is there in plain text
    async with EmbeddedNats(tmp_path / "nats", cipher="chachapoly", key=KEY) as server:
        assert await read(server) == b"about the " + SECRET_WORD
    assert files_with(server.store_dir, SECRET_WORD) == []


async def test_a_store_written_with_another_key_is_reported_not_silently_recreated(
    tmp_path: Path,
) -> None:
    async with EmbeddedNats(tmp_path / "nats", cipher="chachapoly", key=KEY) as server:
        await put(server)
        nc = await nats.connect(server.url)
        await check_store_loaded(nc, server)  # every stream on disk is open
        await nc.drain()
    async with EmbeddedNats(tmp_path / "nats", cipher="chachapoly", key="another") as server:
        nc = await nats.connect(server.url)
        try:
            with pytest.raises(StoreKeyError, match=r"could not open the streams S of"):
                await check_store_loaded(nc, server)
        finally:
            await nc.drain()


def test_the_key_is_generated_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    store = tmp_path / "nats" / "jetstream"
    cipher_key = store_key(NatsSettings(), tmp_path, store)
    assert cipher_key is not None
    cipher, key = cipher_key
    path = tmp_path / KEY_FILE
    assert cipher == "chachapoly" and len(key) >= 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert store_key(NatsSettings(), tmp_path, store) == ("chachapoly", key)
    given = NatsSettings(js_cipher="aes", js_key=SecretStr("from-settings"))
    assert store_key(given, tmp_path, store) == ("aes", "from-settings")
    assert store_key(NatsSettings(js_cipher="none"), tmp_path, store) is None


async def test_an_encrypted_store_without_its_key_file_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "nats" / "jetstream"
    cipher_key = store_key(NatsSettings(), tmp_path, store)
    assert cipher_key is not None
    async with EmbeddedNats(tmp_path / "nats", cipher=cipher_key[0], key=cipher_key[1]) as server:
        await put(server)
    (tmp_path / KEY_FILE).unlink()
    with pytest.raises(StoreKeyError, match="key file .* is missing"):
        store_key(NatsSettings(), tmp_path, store)
    assert not (tmp_path / KEY_FILE).exists(), "no new key over an encrypted store"
    with pytest.raises(StoreKeyError, match="is encrypted"):
        store_key(NatsSettings(js_cipher="none"), tmp_path, store)


@pytest.mark.parametrize("key", ['q"uote\\slash $HOME é', "-dash", "1e5"])
async def test_any_key_is_taken_literally(tmp_path: Path, key: str) -> None:
    async with EmbeddedNats(tmp_path / "nats", cipher="aes", key=key) as server:
        await put(server)
    async with EmbeddedNats(tmp_path / "nats", cipher="aes", key=key) as server:
        assert await read(server) == b"about the " + SECRET_WORD
    near = key.replace('"', "").replace("\\", "").replace("é", "e") + "x"
    async with EmbeddedNats(tmp_path / "nats", cipher="aes", key=near) as server:
        nc = await nats.connect(server.url)
        try:
            with pytest.raises(StoreKeyError):
                await check_store_loaded(nc, server)
        finally:
            await nc.drain()


async def test_streams_of_another_account_on_disk_are_not_taken_for_a_wrong_key(
    tmp_path: Path,
) -> None:
    async with EmbeddedNats(tmp_path / "nats", cipher="chachapoly", key=KEY) as server:
        await put(server)
        elsewhere = server.store_dir / "jetstream" / "OTHER" / "streams" / "T"
        elsewhere.mkdir(parents=True)  # as another account's stream would lie there
        nc = await nats.connect(server.url)
        try:
            await check_store_loaded(nc, server)  # this connection's account ($G) is whole
            (server.store_dir / "jetstream" / "$G" / "streams" / "GONE").mkdir()
            with pytest.raises(StoreKeyError, match="streams GONE of"):
                await check_store_loaded(nc, server)
        finally:
            await nc.drain()
