from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.broker import BrokerProcess


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


@pytest.fixture
def etcd() -> Iterator:
    """A single-member etcd on loopback (a subprocess), stopped at teardown; the test is
    skipped where etcd is not installed."""
    from devkit.etcd import EtcdServer, etcd_binary

    if etcd_binary() is None:
        pytest.skip("etcd is not installed")
    server = EtcdServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator:
    """One S3 server (a subprocess) for the whole session: moto (devkit/moto.py), or with
    STRATA_TEST_S3=seaweedfs a SeaweedFS `weed server` (devkit/seaweedfs.py, built once),
    a real S3 implementation; CI keeps moto."""
    from devkit.moto import MotoServer

    if os.environ.get("STRATA_TEST_S3", "moto") == "seaweedfs":
        from devkit.seaweedfs import WeedServer

        server: MotoServer = WeedServer().start()
    else:
        server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(moto_server, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """(moto server, a fresh empty bucket), with test AWS credentials in os.environ so
    S3Store in this process (and brokers started from it) find them."""
    import secrets

    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in moto_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"strata-test-{secrets.token_hex(6)}"
    moto_server.create_bucket(bucket)
    return moto_server, bucket
