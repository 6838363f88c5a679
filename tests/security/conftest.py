"""One real deployment (``run.SecurityRun``) shared by every attack module of this folder,
and each module's attack counts."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.pg_fixtures import PgCluster
from tests.security.counts import Tally
from tests.security.run import SecurityRun, security_run


@pytest.fixture(scope="package")
def run(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster) -> Iterator[SecurityRun]:
    with security_run(tmp_path_factory.mktemp("security-run"), pg_cluster,
                      tmp_path_factory.mktemp("security-models")) as started:
        yield started


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """This module's counts; written when the module ends, whatever its result."""
    counts = Tally(Path(str(request.module.__file__)).stem.removeprefix("test_"))
    yield counts
    counts.write()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each test's call report on its item (``rep_call``), for the counts."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
