"""A real S3-compatible HTTP server on loopback for tests and benchmarks (moto's standalone server).

The server runs as its own process (``python -m moto.server``) bound to 127.0.0.1 only, on a
free port, so that Dask worker processes and CLI subprocesses reach it exactly as they would a
real endpoint. Credentials are dummies; nothing leaves the machine.

Fixtures (registered in conftest.py):
    ``s3_server``  (session) -> S3Server: endpoint, env, storage_options, make_bucket()
    ``s3_bucket``  (function) -> S3Bucket: a fresh bucket; ``url(name)`` gives ``s3://bucket/name``
``s3_bucket`` also sets the endpoint and dummy credentials in ``os.environ`` (through
monkeypatch) so that code resolving options from the environment, and subprocesses, find it.
Benchmarks use :func:`running_s3_server` directly.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "fmf-test-key",
    "AWS_SECRET_ACCESS_KEY": "fmf-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud metadata address for credentials
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    """A running loopback S3 server: where it listens, its process id, and how to talk to it."""

    endpoint: str
    pid: int = 0

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point the toolkit (and boto) at this server."""
        return {**DUMMY_ENV, "FMF_S3_ENDPOINT": self.endpoint, "AWS_ENDPOINT_URL": self.endpoint}

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec/s3fs options for this server, for library calls that take them explicitly."""
        return {"endpoint_url": self.endpoint, "key": DUMMY_ENV["AWS_ACCESS_KEY_ID"],
                "secret": DUMMY_ENV["AWS_SECRET_ACCESS_KEY"]}

    def filesystem(self) -> Any:
        """Return a fresh s3fs filesystem on this server (listing cache off)."""
        import s3fs
        return s3fs.S3FileSystem(**self.storage_options, skip_instance_cache=True, use_listings_cache=False)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name unless given) and return its name."""
        name = name or f"fmf-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


@contextlib.contextmanager
def running_s3_server(startup_timeout: float = 20.0) -> Iterator[S3Server]:
    """Start moto's server on 127.0.0.1:<free port> in a subprocess; stop it on exit."""
    port = _free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **DUMMY_ENV})
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with code {proc.returncode} before answering")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/reset", data=b"", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {endpoint} within {startup_timeout} s") from None
                time.sleep(0.05)
        yield S3Server(endpoint=endpoint, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket on the test server."""

    server: S3Server
    name: str

    def url(self, key: str = "") -> str:
        """Return ``s3://<bucket>/<key>``."""
        return f"s3://{self.name}/{key.lstrip('/')}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec options for the server (also resolvable from the environment the fixture sets)."""
        return self.server.storage_options

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses (CLI runs, workers) that must reach the server."""
        return self.server.env

    def keys(self) -> list[str]:
        """Return every object key in the bucket (fresh listing)."""
        fs = self.server.filesystem()
        return sorted(p.split("/", 1)[1] for p in fs.find(self.name))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A loopback S3 server for the whole test session."""
    with running_s3_server() as server:
        yield server


@pytest.fixture()
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    """A fresh bucket, with the endpoint and dummy credentials set in the environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("FMF_STORAGE_OPTIONS", raising=False)
    return S3Bucket(server=s3_server, name=s3_server.make_bucket())
