"""Dask over TLS: the service reaches a ``tls://`` scheduler with its certificate.

Without TLS anyone who reaches the scheduler runs code as the service's user on
every worker (issue 11, finding 13). The certificates are made here with the
``openssl`` command: a throwaway CA, and one certificate it signed for the
scheduler, the workers and the service alike; a second, foreign CA stands for a
certificate the cluster does not trust.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.testing.helpers import run_cli, write_config, write_frames
from biaswatch.testing.service import catalog_rows, running_service

distributed = pytest.importorskip("distributed")
security = pytest.importorskip("distributed.security")

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command makes the certs")


@dataclass(frozen=True)
class Certs:
    """A CA and a certificate with its key that the CA signed."""

    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """A throwaway CA and one certificate it signed (RSA 2048, valid 2 days)."""
    directory.mkdir(parents=True)

    def openssl(*args: str) -> None:
        subprocess.run([str(OPENSSL), *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=biaswatch test CA")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=localhost")  # fmt: skip
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "node.pem", "-days", "2")  # fmt: skip
    return Certs(directory / "ca.pem", directory / "node.pem", directory / "node.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certs, Certs]:
    """The cluster's certificates, and a foreign CA's that it does not trust."""
    base = tmp_path_factory.mktemp("certs")
    return make_certs(base / "cluster"), make_certs(base / "foreign")


@pytest.fixture(scope="module")
def tls_cluster(certs: tuple[Certs, Certs]) -> Iterator[distributed.LocalCluster]:
    """A LocalCluster that speaks only TLS: one worker process offering MEMORY."""
    mine = certs[0]
    tls = security.Security(
        tls_ca_file=str(mine.ca),
        tls_scheduler_cert=str(mine.cert),
        tls_scheduler_key=str(mine.key),
        tls_worker_cert=str(mine.cert),
        tls_worker_key=str(mine.key),
        tls_client_cert=str(mine.cert),
        tls_client_key=str(mine.key),
        require_encryption=True,
    )
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        resources={"MEMORY": 2_000_000_000},
        security=tls,
        protocol="tls",
        dashboard_address=":0",
    ) as local:
        yield local


def tls_service(address: str, certs: Certs) -> dict[str, object]:
    """[service] settings that reach ``address`` with ``certs``."""
    return {
        "executor": "dask",
        "scheduler": address,
        "tls_ca_file": str(certs.ca),
        "tls_cert_file": str(certs.cert),
        "tls_key_file": str(certs.key),
    }


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    """`biaswatch run` that is expected to stop at start."""
    return run_cli("run", "--config", config, timeout=120)


def logged(config: Path, name: str) -> list[dict[str, object]]:
    """The events called ``name`` in the service's JSON log."""
    path = config.parent / "log" / "biaswatch.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [event for event in events if event["event"] == name]


@needs_openssl
def test_combines_run_and_publish_on_a_tls_cluster(
    tmp_path: Path, certs: tuple[Certs, Certs], tls_cluster: distributed.LocalCluster
) -> None:
    """With the cluster's CA, certificate and key the service calibrates, combines, publishes."""
    address = tls_cluster.scheduler_address
    assert address.startswith("tls://")
    config = write_config(tmp_path, service=tls_service(address, certs[0]))
    with running_service(config) as process:
        write_frames(config, "te", 5, interval=0)
        (published,) = process.wait_event("master.published", timeout=120)
        assert process.stop()[0] == 0
        calibrated = process.events("frame.calibrated")
        (connected,) = process.events("executor.connected")
    assert connected["scheduler"] == address
    assert [event.get("on") for event in calibrated] == ["cluster"] * 5
    (attempt,) = catalog_rows(config, "SELECT executor, worker, outcome FROM attempts")
    assert (attempt["executor"], attempt["outcome"]) == ("dask", "done")
    assert str(attempt["worker"]).startswith("tls://")
    assert fits.getheader(published["path"])["NCOMBINE"] == 5


@needs_openssl
def test_a_certificate_the_cluster_does_not_trust_stops_the_start_clearly(
    tmp_path: Path, certs: tuple[Certs, Certs], tls_cluster: distributed.LocalCluster
) -> None:
    """A foreign CA's certificate: exit 69 with a logged reason naming the TLS settings."""
    config = write_config(tmp_path, service=tls_service(tls_cluster.scheduler_address, certs[1]))
    result = run_once(config)
    assert result.returncode == 69, result.stderr
    assert "Traceback" not in result.stderr
    (event,) = logged(config, "executor.unreachable")
    assert "TLS" in str(event["reason"]) and "tls_ca_file" in str(event["reason"])
    assert "tls_ca_file" in result.stderr


@needs_openssl
def test_plain_tcp_to_a_tls_scheduler_stops_the_start_clearly(
    tmp_path: Path, tls_cluster: distributed.LocalCluster
) -> None:
    """tcp:// at a scheduler that requires TLS: exit 69 saying to use tls://, no traceback."""
    address = tls_cluster.scheduler_address.replace("tls://", "tcp://")
    config = write_config(tmp_path, service={"executor": "dask", "scheduler": address})
    result = run_once(config)
    assert result.returncode == 69, result.stderr
    assert "Traceback" not in result.stderr
    (event,) = logged(config, "executor.unreachable")
    assert 'scheduler = "tls://...")' in str(event["reason"])
