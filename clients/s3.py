"""What the S3 source and the S3 archive share: how a client is made and how S3's answers are read.

Sources and sinks do not import each other, so the S3 protocol's pieces both need live here.
"""

from __future__ import annotations

import boto3
import botocore.config
import botocore.exceptions

from core.errors import TransientError
from core.retry import policy_for, retry_after_of as _seconds

__all__ = ["MAX_RETRY_AFTER", "TRANSIENT_CODES", "REFUSED_CODES", "NETWORK_ERRORS", "make_client", "status_of",
           "retry_after_of", "attempts_of", "spent"]

#: The longest wait a server's Retry-After may impose on one attempt.
MAX_RETRY_AFTER = 300.0
#: Error codes that mean "try again later".
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}
#: Error codes that mean the credentials are refused (every later request would fail the same way).
REFUSED_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
#: Failures of the connection itself, not answers of the server.
NETWORK_ERRORS = (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError,
                  botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectTimeoutError,
                  botocore.exceptions.IncompleteReadError, botocore.exceptions.ResponseStreamingError,
                  botocore.exceptions.ConnectionClosedError, ConnectionError, TimeoutError)


def attempts_of(config) -> int:
    """How often botocore sends one request: the `attempts` of the configuration's retry policy."""
    return policy_for("s3", getattr(config, "retry", None)).attempts


def spent(error: TransientError, config) -> TransientError:
    """`error` (throttling, 5xx, a broken connection), marked as already retried by botocore, so
    that the flows pass it on instead of sending the request `attempts` times more (core/retry.py)."""
    error.attempts = attempts_of(config)
    return error


def make_client(config, *, max_attempts: int | None = None):
    """A boto3 S3 client for a source or archive configuration (secrets resolved here, at use).

    Path-style addresses for S3-compatible servers (`endpoint_url`), which rarely have a DNS name
    per bucket; botocore retries throttling, 5xx and broken connections (standard mode, with its
    own jittered backoff) until a request was sent `max_attempts` times (default: the retry
    policy's `attempts`) before the caller sees it.
    """
    max_attempts = max_attempts or attempts_of(config)
    keys = {}
    if config.access_key_id is not None:
        keys = {"aws_access_key_id": config.access_key_id.resolve().get_secret_value(),
                "aws_secret_access_key": config.secret_access_key.resolve().get_secret_value()}
    verify: bool | str = str(config.ca_file) if config.ca_file is not None else config.verify_tls
    settings = botocore.config.Config(
        region_name=config.region, connect_timeout=min(config.timeout, 15.0), read_timeout=config.timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        s3={"addressing_style": "path" if config.endpoint_url else "auto"},
        max_pool_connections=32, user_agent_extra="umstieg")
    return boto3.session.Session(**keys).client("s3", endpoint_url=config.endpoint_url, verify=verify,
                                                config=settings)


def status_of(exc: botocore.exceptions.ClientError) -> tuple[str, int]:
    """(error code, HTTP status) of a refused request."""
    meta = exc.response.get("ResponseMetadata", {})
    return str(exc.response.get("Error", {}).get("Code", "")), int(meta.get("HTTPStatusCode") or 0)


def retry_after_of(exc: botocore.exceptions.ClientError) -> float | None:
    """The wait the server asked for (Retry-After, seconds), capped."""
    return _seconds(exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after"),
                    MAX_RETRY_AFTER)
