"""The proxy's errors, each carrying its HTTP status and code (frontdoor.error_middleware answers them as JSON).

ServiceError (visionpool.client.wire)
 ├── BadRequest, UploadIncomplete (400), RequestTimeout (408), PayloadTooLarge (413), busy (503): the front door's
 ├── Unauthorized (401)             unauthorized        (registry token missing or wrong)
 ├── ModelNotFound (404)            model_not_found     (no registered worker serves it)
 ├── BadGateway (502)               bad_gateway         (the worker failed and no retry was possible)
 ├── NoWorker (503)                 no_worker           (no healthy worker serves the model; Retry-After)
 └── UpstreamTimeout (504)          upstream_timeout    (the worker did not answer in time)
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

from visionpool.client.wire import Code, ModelNotFound, ServiceError, ServiceUnavailable


class BadGateway(ServiceError):
    status, code = 502, Code.BAD_GATEWAY


class NoWorker(ServiceUnavailable):
    code = Code.NO_WORKER


class UpstreamTimeout(ServiceError):
    status, code = 504, Code.UPSTREAM_TIMEOUT


def no_worker(model: str | None, served: AbstractSet[str]) -> ServiceError:
    """404 when workers are known but none serves ``model``; 503 (retry later) when none is healthy."""
    if model is not None and served and model not in served:
        return ModelNotFound(f"No worker serves a model named {model!r}; the pool serves: {', '.join(sorted(served))}.")
    what = f"serves model {model!r}" if model else "is registered"
    return NoWorker(f"No healthy worker {what}; retry later.")


def gave_up(tried: set[str]) -> BadGateway:
    return BadGateway(f"Every worker tried failed ({', '.join(sorted(tried))}); retry the request.")
