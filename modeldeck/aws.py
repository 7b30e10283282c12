"""How modeldeck talks to AWS: one client configuration, with botocore's standard retry mode.

Every AWS client modeldeck creates (the Lambda handlers, the training steps, the CLI on AWS) takes its
configuration from :func:`client_config`, so throttling and transient errors are retried in one way, by the
SDK, and never by a loop of our own. Standard mode (AWS SDKs and Tools Reference Guide, "Retry behavior")
retries throttling errors (``Throttling``, ``ThrottlingException``, ``TooManyRequestsException``,
``SlowDown``, ...), transient errors (``RequestTimeout``, ``InternalError``, HTTP 500/502/503/504) and
connection errors, with exponential backoff and full jitter (at most 20 s between attempts), within a
client-wide retry quota.
"""

from __future__ import annotations

from typing import Any

from botocore.config import Config

# Attempts per call, the first included: 4 retries sleep up to 1 + 2 + 4 + 8 s, enough for a throttling
# burst of several seconds, and short of a Lambda task's timeout.
MAX_ATTEMPTS = 5


def client_config() -> Config:
    """The botocore configuration of every modeldeck client: standard retry mode, ``MAX_ATTEMPTS`` attempts.

    ``total_max_attempts`` counts the first attempt; botocore's ``max_attempts`` key would count retries only.
    """
    return Config(retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS})


def client(service: str, **kwargs: Any) -> Any:
    """A boto3 client for ``service`` with :func:`client_config` (other keyword arguments pass through)."""
    import boto3  # here, not at import: the inference handler builds its botocore clients without boto3

    return boto3.client(service, config=client_config(), **kwargs)
