from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker_process import BrokerProcess


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator:
    """Start brokers as subprocesses; every one started is stopped at teardown."""
    started: list[BrokerProcess] = []

    def start(
        *extra_args: str, data_dir: Path | None = None, port: int | None = None
    ) -> BrokerProcess:
        b = BrokerProcess(data_dir or tmp_path / "data", port, *extra_args)
        started.append(b)
        return b.start()

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    """One broker on the embedded default, with a fresh data directory."""
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for a whole test module, for tests that only need a live endpoint."""
    b = BrokerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    yield b
    b.stop()
