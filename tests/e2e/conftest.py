from collections.abc import Iterator

import pytest

from imagecache.simulator.server import KentikSimulator
from tests.harness.service import Service


@pytest.fixture(scope="module")
def service(
    simulator: KentikSimulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    with Service(
        tmp_path_factory.mktemp("service"),
        simulator.url,
        KENTIK_API_TIMEOUT=2,
        KENTIK_API_RETRIES=1,
        ENTRY_WAIT_TIMEOUT=20,
        REUSE_MAX_AGE=60,
        KENTIK_RETRY_AFTER_MAX=1,
    ) as service:
        yield service


@pytest.fixture(autouse=True)
def _reset_simulator(simulator: KentikSimulator) -> None:
    simulator.reset()
