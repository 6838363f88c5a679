"""Errors of the crypto module. None of them ever carries key material."""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every crypto failure."""


class KeyringError(CryptoError, RuntimeError):
    """``MUMU_MASTER_KEYS`` is missing or malformed (a start-up error for the operator)."""


class UnknownMasterKeyError(CryptoError):
    """A data key is wrapped by a master key that is not in this keyring."""


class DecryptionError(CryptoError):
    """Authentication failed: wrong key, tampered bytes, or the ciphertext was moved."""
