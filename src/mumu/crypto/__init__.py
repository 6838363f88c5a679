"""Envelope encryption: a master keyring wraps per-workspace data keys (AES-256-GCM)."""

from mumu.crypto.envelope import DataKey, seal, unseal
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
    "Keyring",
    "KeyringError",
    "MasterKey",
    "UnknownMasterKeyError",
    "seal",
    "unseal",
]
