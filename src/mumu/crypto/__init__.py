"""Envelope encryption: a master keyring wraps per-workspace data keys (AES-256-GCM)."""

from mumu.crypto.envelope import DataKey, Field, seal, seal_all, unseal
from mumu.crypto.errors import (
    CryptoError,
    DecryptionError,
    KeyringError,
    UnknownMasterKeyError,
)
from mumu.crypto.keyring import Keyring, MasterKey

__all__ = [
    "CryptoError",
    "DataKey",
    "DecryptionError",
    "Field",
    "Keyring",
    "KeyringError",
    "MasterKey",
    "UnknownMasterKeyError",
    "seal",
    "seal_all",
    "unseal",
]
