"""Field encryption under a workspace data key (AES-256-GCM).

Ciphertext format (version 1), stored as ``bytea``::

    0x01 | data-key version (4 bytes, big endian) | nonce (12 bytes) | ciphertext+tag

The associated data binds the header, the workspace, the table, the column and the
row id, so a ciphertext copied to another row, column, table or workspace fails to
decrypt, and so does any change to the header (the key version it names).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mumu.crypto.errors import DecryptionError

FORMAT = 1
NONCE_BYTES = 12
_HEADER = struct.Struct(">BI")
HEADER_BYTES = _HEADER.size


@dataclass(frozen=True)
class DataKey:
    """A workspace's data key of one version; ``repr`` never shows the key."""

    workspace_id: str
    version: int
    aead: AESGCM = field(repr=False, compare=False)

    @classmethod
    def from_bytes(cls, workspace_id: str, version: int, material: bytes) -> DataKey:
        return cls(workspace_id, version, AESGCM(material))

    @property
    def header(self) -> bytes:
        return _HEADER.pack(FORMAT, self.version)


def _aad(header: bytes, workspace_id: str, table: str, column: str, row_id: str) -> bytes:
    return header + f"|{workspace_id}|{table}|{column}|{row_id}".encode()


def key_version(blob: bytes) -> int:
    """The data-key version a ciphertext was sealed with."""
    if len(blob) < HEADER_BYTES + NONCE_BYTES + 16 or blob[0] != FORMAT:
        raise DecryptionError("not a mumu ciphertext (unknown format or truncated)")
    return int(_HEADER.unpack_from(blob)[1])


def seal(key: DataKey, plaintext: str, *, table: str, column: str, row_id: str) -> bytes:
    return seal_all(key, [(table, column, row_id, plaintext)])[0]


Field = tuple[str, str, str, str]
"""(table, column, row id, plaintext) of one value to seal."""


def seal_all(key: DataKey, fields: Sequence[Field]) -> list[bytes]:
    """Seal many values under ``key``; their random nonces come from one read of the
    operating system's random source (a batch of rows costs one call, not one each)."""
    header = key.header
    nonces = os.urandom(NONCE_BYTES * len(fields))
    encrypt = key.aead.encrypt
    ws = key.workspace_id
    out = []
    for i, (table, column, row_id, plaintext) in enumerate(fields):
        nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
        aad = _aad(header, ws, table, column, row_id)
        out.append(header + nonce + encrypt(nonce, plaintext.encode(), aad))
    return out


def unseal(key: DataKey, blob: bytes, *, table: str, column: str, row_id: str) -> str:
    version = key_version(blob)
    if version != key.version:
        raise DecryptionError(
            f"ciphertext needs data key v{version}, got v{key.version}"
        )
    header = blob[:HEADER_BYTES]
    nonce = blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
    aad = _aad(header, key.workspace_id, table, column, row_id)
    try:
        plain = key.aead.decrypt(nonce, blob[HEADER_BYTES + NONCE_BYTES :], aad)
    except InvalidTag:
        raise DecryptionError(
            f"{table}.{column} of row {row_id} does not authenticate "
            f"(tampered, or moved from another row, column or workspace)"
        ) from None
    return plain.decode()
