"""The service's errors as typed exceptions, carrying the server's code and message.

ClientError
 ├── BadImage (400: invalid_image, empty_body)
 ├── BadRequest (400: anything else)
 ├── ModelNotFound (404)
 ├── TooLarge (413)
 ├── UnsupportedImage (415)
 ├── Unavailable (503: overloaded, no_worker, not_ready; retry_after)   retried
 ├── Timeout (504, or no answer in time)                                retried
 ├── ServerError (other 5xx)                                            retried
 └── ConnectionFailed (refused, reset)                                  retried
"""

from __future__ import annotations

from .wire import Code


class ClientError(Exception):
    """Something the service (or the network) refused; ``code`` is the server's error code."""

    retryable = False

    def __init__(
        self, message: str, *, code: str = "error", status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.status, self.retry_after = message, code, status, retry_after

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.status is None else f"{self.status} {self.code}: {self.message}"


class BadImage(ClientError):
    """The image is empty, undecodable or truncated."""


class BadRequest(ClientError):
    """A parameter or the request itself is wrong."""


class ModelNotFound(ClientError):
    """No such model on the service."""


class TooLarge(ClientError):
    """The body or the image is over the service's limit."""


class UnsupportedImage(ClientError):
    """The service does not take this kind of content."""


class Unavailable(ClientError):
    """Overloaded, no worker, or not ready yet: worth retrying (after ``retry_after`` seconds)."""

    retryable = True


class Timeout(ClientError):
    """No answer in time."""

    retryable = True


class ServerError(ClientError):
    """The service failed."""

    retryable = True


class ConnectionFailed(ClientError):
    """The connection was refused or broke."""

    retryable = True


BY_STATUS: dict[int, type[ClientError]] = {
    404: ModelNotFound,
    413: TooLarge,
    415: UnsupportedImage,
    503: Unavailable,
    504: Timeout,
}


def error_for(status: int, code: str, message: str, retry_after: float | None) -> ClientError:
    """The typed error for an HTTP error answer."""
    if status == 400:
        kind: type[ClientError] = BadImage if code in (Code.INVALID_IMAGE, Code.EMPTY_BODY) else BadRequest
    else:
        kind = BY_STATUS.get(status, ServerError if status >= 500 else BadRequest)
    return kind(message, code=code, status=status, retry_after=retry_after)
