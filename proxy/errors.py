"""The proxy's errors: aiohttp's typed HTTP exceptions with the same JSON body the workers use.

web.HTTPException
 ├── HTTPBadRequest (400)          bad_request
 ├── HTTPUnauthorized (401)        unauthorized          (registry token missing or wrong)
 ├── HTTPNotFound (404)            not_found, model_not_found (no registered worker serves it)
 ├── HTTPBadGateway (502)          bad_gateway           (the worker failed and no retry was possible)
 ├── HTTPServiceUnavailable (503)  no_worker             (no healthy worker serves the model)
 └── HTTPGatewayTimeout (504)      upstream_timeout      (the worker did not answer in time)
"""

from __future__ import annotations

import json

from aiohttp import web


def json_error(cls: type[web.HTTPException], code: str, message: str, **headers: str) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is ``{"error": {"code": ..., "message": ...}}``."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return cls(text=body, content_type="application/json", headers=headers or None)


def no_worker(model: str | None, served: set[str]) -> web.HTTPException:
    """404 when workers are known but none serves ``model``; 503 (retry later) when none is healthy."""
    if model is not None and served and model not in served:
        message = f"No worker serves a model named {model!r}; the pool serves: {', '.join(sorted(served))}."
        return json_error(web.HTTPNotFound, "model_not_found", message)
    what = f"serves model {model!r}" if model else "is registered"
    message = f"No healthy worker {what}; retry later."
    return json_error(web.HTTPServiceUnavailable, "no_worker", message, **{"Retry-After": "1"})
