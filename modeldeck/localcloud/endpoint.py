"""The local cloud shared as an AWS endpoint on 127.0.0.1 while ``modeldeck serve`` runs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3

from modeldeck.localcloud.base import LOCAL_REGION

if TYPE_CHECKING:
    from modeldeck.localcloud.cloud import LocalCloud


ENDPOINT_FILE = "endpoint.json"


class SharedEndpoint:
    """While ``modeldeck serve`` runs, its local cloud is also an AWS endpoint on 127.0.0.1, so other
    commands act on the very same state instead of starting a cloud of their own.

    moto's server and the in-process mock share moto's backends, so a request through the endpoint
    reaches the same buckets, functions and state machines, and Lambda invocations still run in-process,
    in the serving process.
    """

    def __init__(self, cloud: LocalCloud, state_dir: Path) -> None:
        from moto.server import ThreadedMotoServer

        self.path = state_dir / ENDPOINT_FILE
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access line per AWS call
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps({"url": self.url, "pid": os.getpid(), "bucket": cloud.bucket, "outputs": cloud.deployer.outputs})
        )

    def publish(self, **fields: Any) -> None:
        """Update what the endpoint file tells other commands (e.g. the outputs after a redeploy); replaced
        atomically, so a reader never sees half a file."""
        endpoint = json.loads(self.path.read_text())
        endpoint.update(fields)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(endpoint))
        tmp.replace(self.path)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.server.stop()


def running_endpoint(state_dir: Path) -> dict[str, Any] | None:
    """The endpoint a running ``modeldeck serve`` published for ``state_dir``, if it still answers."""
    import socket
    from urllib.parse import urlsplit

    try:
        endpoint = json.loads((state_dir / ENDPOINT_FILE).read_text())
        os.kill(int(endpoint["pid"]), 0)
        address = urlsplit(endpoint["url"])
        with socket.create_connection((address.hostname, address.port), timeout=2):
            return dict(endpoint)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def endpoint_client_factory(url: str) -> Callable[[str], Any]:
    """boto3 clients for a shared local endpoint (fake credentials; path-style S3)."""
    from botocore.config import Config

    session = boto3.Session(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        aws_session_token="testing",
        region_name=LOCAL_REGION,
    )
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
    return lambda service: session.client(service, endpoint_url=url, config=config)
