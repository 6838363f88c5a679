"""The master keyring: several AES-256 keys with ids, the first one primary.

``MUMU_MASTER_KEYS`` is ``id:base64key,id:base64key,...``. The primary key wraps new
data keys; every key in the ring can unwrap. Rotation is a data question: the
wrapped blob names the master key that wrapped it.

Wrapped data key format (version 1)::

    0x01 | len(key id) (1 byte) | key id (ascii) | nonce (12 bytes) | ciphertext+tag

The associated data binds the wrapped key to its workspace and data-key version,
so a wrapped key copied to another workspace does not unwrap.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from mumu.crypto.errors import DecryptionError, KeyringError, UnknownMasterKeyError

KEY_BYTES = 32
NONCE_BYTES = 12
WRAP_FORMAT = 1
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True)
class MasterKey:
    """One master key. ``repr`` shows the id only."""

    key_id: str
    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.match(self.key_id):
            # never echo it: an entry written key-first would print the key here
            raise KeyringError("a master key id must match [A-Za-z0-9_-]{1,32} (is the entry "
                               "written `id:base64key`, id first?)")
        if len(self.material) != KEY_BYTES:
            raise KeyringError(
                f"master key {self.key_id!r} must be {KEY_BYTES} bytes, got {len(self.material)}"
            )

    @classmethod
    def generate(cls, key_id: str) -> MasterKey:
        return cls(key_id, secrets.token_bytes(KEY_BYTES))

    def encoded(self) -> str:
        """``id:base64key``, the form ``MUMU_MASTER_KEYS`` takes."""
        return f"{self.key_id}:{base64.b64encode(self.material).decode()}"


def _wrap_aad(workspace_id: str, version: int) -> bytes:
    return f"mumu-dek|v{WRAP_FORMAT}|{workspace_id}|{version}".encode()


class Keyring:
    """Master keys by id; ``primary`` wraps, all unwrap."""

    def __init__(self, keys: list[MasterKey]) -> None:
        if not keys:
            raise KeyringError("the master keyring is empty")
        ids = [k.key_id for k in keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise KeyringError(f"duplicate master key ids: {', '.join(duplicates)}")
        self._keys = {k.key_id: AESGCM(k.material) for k in keys}
        self._masters = {k.key_id: k for k in keys}
        self._ids = ids

    def __repr__(self) -> str:
        return f"Keyring(primary={self.primary_id!r}, ids={self._ids!r})"

    @property
    def primary_id(self) -> str:
        return self._ids[0]

    @property
    def key_ids(self) -> list[str]:
        return list(self._ids)

    def promoted(self, key_id: str) -> Keyring:
        """The same keys with ``key_id`` primary."""
        if key_id not in self._masters:
            raise KeyringError(
                f"master key {key_id!r} is not in MUMU_MASTER_KEYS (have: {', '.join(self._ids)})"
            )
        return Keyring([self._masters[key_id],
                        *(self._masters[i] for i in self._ids if i != key_id)])

    def encoded(self) -> str:
        """The ``MUMU_MASTER_KEYS`` form of the whole ring, in order (a secret: never log it)."""
        return ",".join(self._masters[i].encoded() for i in self._ids)

    def with_primary(self, key: MasterKey) -> Keyring:
        """These keys plus ``key``, which becomes primary."""
        return Keyring([key, *(self._masters[i] for i in self._ids)])

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """Parse ``id:base64key,...``; errors name the entry, never the key."""
        keys = []
        entries = [e.strip() for e in text.replace("\n", ",").split(",") if e.strip()]
        if not entries:
            raise KeyringError("MUMU_MASTER_KEYS is empty: expected `id:base64key,...`")
        for position, entry in enumerate(entries, start=1):
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id or not encoded:
                raise KeyringError(
                    f"MUMU_MASTER_KEYS entry {position} is not `id:base64key`"
                )
            if not _KEY_ID.match(key_id):  # not echoed: written key-first, it is the key
                raise KeyringError(
                    f"MUMU_MASTER_KEYS entry {position}: the id must match "
                    "[A-Za-z0-9_-]{1,32} (`id:base64key`, id first)"
                )
            try:
                material = base64.b64decode(encoded.strip(), validate=True)
            except (binascii.Error, ValueError):
                try:
                    material = base64.urlsafe_b64decode(encoded.strip())
                except (binascii.Error, ValueError):
                    raise KeyringError(
                        f"MUMU_MASTER_KEYS entry {position} ({key_id!r}): "
                        "the key is not valid base64"
                    ) from None
            keys.append(MasterKey(key_id, material))
        return cls(keys)

    @classmethod
    def from_secret(cls, master_keys: SecretStr | None) -> Keyring:
        """The keyring of ``MUMU_MASTER_KEYS``; a clear error when it is unset or malformed."""
        if master_keys is None:
            raise KeyringError(
                "MUMU_MASTER_KEYS is not set: give `id:base64key[,id:base64key...]` "
                "(32-byte keys; generate one with `mumu keys generate`)"
            )
        return cls.parse(master_keys.get_secret_value())

    def wrap(self, data_key: bytes, workspace_id: str, version: int) -> tuple[str, bytes]:
        """Wrap ``data_key`` with the primary key: (master key id, wrapped blob)."""
        kid = self.primary_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._keys[kid].encrypt(nonce, data_key, _wrap_aad(workspace_id, version))
        head = bytes([WRAP_FORMAT, len(kid)]) + kid.encode()
        return kid, head + nonce + sealed

    @staticmethod
    def wrapped_key_id(blob: bytes) -> str:
        if len(blob) < 2 or blob[0] != WRAP_FORMAT:
            raise DecryptionError("wrapped data key has an unknown format")
        return blob[2 : 2 + blob[1]].decode("ascii", errors="replace")

    def unwrap(self, blob: bytes, workspace_id: str, version: int) -> bytes:
        kid = self.wrapped_key_id(blob)
        aead = self._keys.get(kid)
        if aead is None:
            raise UnknownMasterKeyError(
                f"data key v{version} of workspace {workspace_id} is wrapped by master key "
                f"{kid!r}, which is not in MUMU_MASTER_KEYS (have: {', '.join(self._ids)})"
            )
        start = 2 + blob[1]
        nonce, sealed = blob[start : start + NONCE_BYTES], blob[start + NONCE_BYTES :]
        try:
            return aead.decrypt(nonce, sealed, _wrap_aad(workspace_id, version))
        except InvalidTag:
            raise DecryptionError(
                f"data key v{version} of workspace {workspace_id} does not unwrap with "
                f"master key {kid!r}"
            ) from None
