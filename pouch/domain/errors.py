"""Domain errors. Each is what a client ends up seeing, rendered in its provider's shape.

`status` is the HTTP status, `code` the OpenAI-style `error.code`, `kind` the coarse reason
pouch records on the flow (auth, model, rate, budget, price, request, store).
"""

from __future__ import annotations


class PouchError(Exception):
    """Base class: a request pouch refuses, with a message saying what to do."""

    status = 400
    code = "invalid_request_error"
    kind = "request"

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class InvalidKey(PouchError):
    """Seen by a client whose key is missing, unknown, revoked or expired."""

    status = 401
    code = "invalid_api_key"
    kind = "auth"


class ModelNotAllowed(PouchError):
    """Seen by a client asking for a model outside its key's allowlist."""

    status = 403
    code = "model_not_allowed"
    kind = "model"


class RateLimited(PouchError):
    """Seen by a client over its key's requests/min, tokens/min or concurrency limit."""

    status = 429
    code = "rate_limit_exceeded"
    kind = "rate"


class BudgetExhausted(PouchError):
    """Seen by a client whose key cannot cover this request's worst-case cost."""

    status = 429
    code = "insufficient_quota"
    kind = "budget"


class ModelNotPriced(PouchError):
    """Seen by a client asking for a model pouch has no price for (never billed as $0)."""

    status = 400
    code = "model_not_priced"
    kind = "price"


class ModelRetired(PouchError):
    """Seen by a client asking for a model its provider no longer serves: the date and the
    replacement, with the status and code the provider itself answers a gone model with."""

    status = 404
    code = "model_not_found"
    kind = "price"


class ContextTooLong(PouchError):
    """Seen by a client whose request is longer than any context pouch knows the model's price for."""

    status = 400
    code = "context_length_exceeded"
    kind = "price"


class BadRequest(PouchError):
    """Seen by a client whose request body pouch cannot read (it is not forwarded)."""

    status = 400
    code = "invalid_request_error"
    kind = "request"


class EndpointNotMetered(PouchError):
    """Seen by a client calling a paid endpoint pouch cannot price (the operator may opt in)."""

    status = 403
    code = "endpoint_not_metered"
    kind = "endpoint"


class ToolNotMetered(PouchError):
    """Seen by a client whose request uses a paid tool pouch cannot bound or price (the operator may opt in)."""

    status = 403
    code = "tool_not_metered"
    kind = "endpoint"


class NotConfigured(PouchError):
    """Seen by a client sending a request to a provider host the operator did not configure
    (an Azure resource nobody named): the gateway's credential never goes there."""

    status = 403
    code = "host_not_configured"
    kind = "endpoint"


class InsecureRequest(PouchError):
    """Seen by a client calling a provider over plain HTTP or an unusual port: refused, so that
    no credential ever travels in cleartext or to a port the provider does not serve."""

    status = 400
    code = "https_required"
    kind = "request"


class StoreUnavailable(PouchError):
    """Seen by a client when the gateway cannot reach its store: fail closed, nothing forwarded."""

    status = 503
    code = "store_unavailable"
    kind = "store"


class InvalidInput(ValueError):
    """Seen by an operator: a bad flag or option value (negative budget, bad period, bad glob)."""


class UnknownEndpoint(PouchError):
    """Seen by a client calling a path on an LLM host that pouch does not know (not forwarded)."""

    status = 404
    code = "unknown_endpoint"
    kind = "endpoint"


class ModelNotFound(PouchError):
    """Seen by a client asking pouch's own answer (a mock key's) for a model the price table
    does not know: the provider's 404, as it answers for a model it does not serve."""

    status = 404
    code = "model_not_found"
    kind = "model"


class NoLocalAnswer(PouchError):
    """Seen by a client whose request pouch must answer itself (a mock key's, or every request
    under pouch_mock=all: they never reach the provider) but cannot: nothing was forwarded."""

    status = 403
    code = "mock_not_available"
    kind = "endpoint"


class SidePathRefused(PouchError):
    """Seen by a client calling a side path (not the model API) whose family pouch does not
    forward for a pouch key (docs/side-paths.md), such as Claude.ai's account endpoints."""

    status = 403
    code = "side_path_refused"
    kind = "endpoint"


class GatewayError(PouchError):
    """Seen by a client when a link of the chain failed: the request is not forwarded."""

    status = 500
    code = "gateway_error"
    kind = "gateway"


class UpstreamUnreachable(PouchError):
    """Seen by a client whose request pouch could not deliver: the upstream refused the
    connection, failed TLS verification, did not resolve or timed out. Nothing was sent."""

    status = 502
    code = "upstream_unreachable"
    kind = "upstream"
