"""Properties of the envelope encryption (AES-256-GCM) and the master keyring."""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mumu.crypto import DataKey, DecryptionError, Keyring, KeyringError, MasterKey, seal, unseal
from mumu.crypto.errors import UnknownMasterKeyError
from mumu.settings import Settings

WS_A = str(uuid.UUID(int=1))
WS_B = str(uuid.UUID(int=2))
KEY_A = DataKey.from_bytes(WS_A, 1, b"a" * 32)
PLACE = {"table": "transcripts", "column": "text", "row_id": str(uuid.UUID(int=7))}


@given(st.text())
def test_round_trip_of_any_text(text: str) -> None:
    assert unseal(KEY_A, seal(KEY_A, text, **PLACE), **PLACE) == text


@given(st.text(min_size=1, max_size=200), st.data())
@settings(max_examples=300)
def test_any_single_bit_flip_fails(text: str, data: st.DataObject) -> None:
    """Header, nonce, ciphertext or tag: flipping any one bit never decrypts."""
    blob = bytearray(seal(KEY_A, text, **PLACE))
    bit = data.draw(st.integers(0, len(blob) * 8 - 1))
    blob[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptionError):
        unseal(KEY_A, bytes(blob), **PLACE)


@given(st.text(max_size=100), st.sampled_from(["table", "column", "row_id"]), st.data())
def test_any_change_of_associated_data_fails(text: str, field: str, data: st.DataObject) -> None:
    blob = seal(KEY_A, text, **PLACE)
    value = PLACE[field]
    raw = bytearray(value.encode())
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    moved = {**PLACE, field: raw.decode("utf-8", errors="replace")}
    if moved[field] == value:
        moved[field] = value + "x"
    with pytest.raises(DecryptionError):
        unseal(KEY_A, blob, **moved)


@given(st.text(max_size=100))
def test_ciphertext_moved_to_another_row_column_or_workspace_fails(text: str) -> None:
    blob = seal(KEY_A, text, **PLACE)
    with pytest.raises(DecryptionError):
        unseal(KEY_A, blob, **{**PLACE, "row_id": str(uuid.UUID(int=8))})
    with pytest.raises(DecryptionError):
        unseal(KEY_A, blob, **{**PLACE, "column": "question"})
    with pytest.raises(DecryptionError):
        unseal(KEY_A, blob, **{**PLACE, "table": "answers"})
    # same key material, other workspace: the workspace is bound in the associated data
    same_key_other_ws = DataKey.from_bytes(WS_B, 1, b"a" * 32)
    with pytest.raises(DecryptionError):
        unseal(same_key_other_ws, blob, **PLACE)


def test_equal_plaintexts_give_different_ciphertexts() -> None:
    assert seal(KEY_A, "same", **PLACE) != seal(KEY_A, "same", **PLACE)


@given(st.binary(min_size=32, max_size=32), st.integers(1, 2**31 - 1))
def test_wrapped_data_key_unwraps_only_for_its_workspace_and_version(
    material: bytes, version: int
) -> None:
    ring = Keyring([MasterKey("m1", b"m" * 32)])
    kid, wrapped = ring.wrap(material, WS_A, version)
    assert kid == "m1"
    assert ring.unwrap(wrapped, WS_A, version) == material
    with pytest.raises(DecryptionError):
        ring.unwrap(wrapped, WS_B, version)
    with pytest.raises(DecryptionError):
        ring.unwrap(wrapped, WS_A, version + 1)


def test_rotation_keeps_old_wraps_readable() -> None:
    old = MasterKey.generate("old")
    new = MasterKey.generate("new")
    _, wrapped = Keyring([old]).wrap(b"d" * 32, WS_A, 1)
    rotated = Keyring([new, old])
    assert rotated.unwrap(wrapped, WS_A, 1) == b"d" * 32
    assert rotated.wrap(b"d" * 32, WS_A, 1)[0] == "new"
    with pytest.raises(UnknownMasterKeyError, match="'old'"):
        Keyring([new]).unwrap(wrapped, WS_A, 1)


def test_keyring_parses_ids_and_primary() -> None:
    a, b = MasterKey.generate("a"), MasterKey.generate("b-2")
    ring = Keyring.parse(f"{a.encoded()}, {b.encoded()}")
    assert ring.primary_id == "a"
    assert ring.key_ids == ["a", "b-2"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("nokey", "not `id:base64key`"),
        ("k1:not*base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "must be 32 bytes"),
        (f"bad id:{base64.b64encode(b'x' * 32).decode()}", "must match"),
        (f"k:{base64.b64encode(b'x' * 32).decode()},k:{base64.b64encode(b'y' * 32).decode()}",
         "duplicate"),
        # written key-first: the key sits where the id belongs and must not be echoed
        (f"{base64.b64encode(b'z' * 32).decode()}:k1", "id must match"),
        (f"{base64.b64encode(b'z' * 32).decode()}:abcd", "id must match"),
    ],
)
def test_malformed_keyring_is_a_clear_error_without_key_material(value: str, message: str) -> None:
    with pytest.raises(KeyringError, match=message) as info:
        Keyring.parse(value)
    for part in value.replace(",", ":").split(":"):
        if len(part) > 8:  # neither side of any entry: one of them may be a key
            assert part not in str(info.value)


def test_missing_keyring_names_the_variable() -> None:
    with pytest.raises(KeyringError, match="MUMU_MASTER_KEYS is not set"):
        Keyring.from_secret(None)


def test_keys_never_appear_in_repr() -> None:
    key = MasterKey.generate("k1")
    ring = Keyring([key])
    encoded = key.encoded().partition(":")[2]
    for text in (repr(key), repr(ring), repr(KEY_A), str(Settings(master_keys=key.encoded()))):
        assert encoded not in text
        assert "k1" in text or "DataKey" in text or "master_keys" in text
