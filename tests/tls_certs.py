"""The throw-away PKI of the TLS tests (made by ``mumu.bench.pki``) as fixtures."""

from __future__ import annotations

import pytest

from mumu.bench.pki import Pki, make_pki

__all__ = ["Pki", "make_pki", "other_pki", "pki"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second, unrelated CA: what it signed must be refused by ``pki``'s servers."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), "other")
