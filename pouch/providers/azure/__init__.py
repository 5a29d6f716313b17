"""Azure OpenAI (``{resource}.openai.azure.com``, ``{resource}.cognitiveservices.azure.com``).

Azure serves OpenAI's API under ``/openai`` in two shapes:

- per deployment: ``/openai/deployments/{deployment}/chat/completions?api-version=...``
  (also ``/completions``, ``/embeddings``); a ``model`` in the body is ignored by Azure;
- without one: ``/openai/v1/...`` (and the older ``/openai/responses?api-version=...``),
  where the body's ``model`` names the deployment.

Either way a request names a *deployment*, which the operator named. ``deployments`` maps it
to the model it runs, for pricing and key model rules; an unmapped deployment is taken to be
named after its model (the usual practice). Responses report the real model, which the usage
link can use when the mapped name has no price. Everything else (usage, errors, mocks, prompt
counting, transcripts) is OpenAI's format, from ``pouch.providers.openai``: this folder only
says where Azure differs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from pouch.domain.errors import BadRequest
from pouch.providers.base import Call, Endpoint
from pouch.providers.openai import OpenAI

_DEPLOYMENTS = "/openai/deployments/"
# Azure's rule for deployment names: letters, digits, "-", "_", "."; at most 64.
_DEPLOYMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MODEL_NAME = re.compile(r"[^\s=,]+")
_RESOURCE_HOST = re.compile(r"[a-z0-9][a-z0-9-]{0,63}(\.[a-z0-9-]+)+")


def parse_deployment(spec: str) -> tuple[str, str]:
    """``prod-chat=gpt-4o`` -> ("prod-chat", "gpt-4o"), for the ``pouch_azure_deployment`` option."""
    deployment, sep, model = spec.partition("=")
    deployment, model = deployment.strip(), model.strip()
    if not sep or not _DEPLOYMENT_NAME.fullmatch(deployment) or not _MODEL_NAME.fullmatch(model):
        raise ValueError(f"bad Azure deployment {spec!r}: use DEPLOYMENT=MODEL, e.g. prod-chat=gpt-4o")
    return deployment, model


def parse_deployments(specs: Iterable[str]) -> dict[str, str]:
    """Every spec of the option as one mapping (deployment names lower-cased: Azure ignores case)."""
    mapping: dict[str, str] = {}
    for spec in specs:
        deployment, model = parse_deployment(spec)
        if mapping.setdefault(deployment.lower(), model) != model:
            raise ValueError(f"Azure deployment {deployment!r} is mapped to two models")
    return mapping


class AzureOpenAI(OpenAI):
    name = "azure"
    hosts = (".openai.azure.com", ".cognitiveservices.azure.com")
    credential_env = ("AZURE_OPENAI_API_KEY",)
    base_path = "/openai"

    def __init__(self, deployments: dict[str, str] | None = None):
        super().__init__()
        self.deployments = dict(deployments or {})  # lower-cased deployment -> model
        self.resources: frozenset[str] = frozenset()  # hosts of the operator's resources: the only ones the key goes to

    def endpoint(self, method: str, path: str) -> Endpoint | None:
        below = _below_openai(path)
        return None if below is None else super().endpoint(method, self.base_path + below[1])

    def read_call(self, endpoint: Endpoint, path: str, body: dict) -> Call:
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object")
        below = _below_openai(path)
        deployment = below[0] if below else None
        if deployment is None:
            deployment = body.get("model")
        if isinstance(deployment, str) and deployment.strip():
            deployment = deployment.strip()
            # A copy: the body goes upstream as the client wrote it.
            body = {**body, "model": self.deployments.get(deployment.lower(), deployment)}
        return super().read_call(endpoint, path, body)

    def authorize(self, headers, query, secret: str) -> None:
        super().authorize(headers, query, "")  # removes every client credential
        headers["api-key"] = secret


def parse_resource(spec: str) -> str:
    """``my-res``, ``my-res.openai.azure.com`` or ``https://my-res.openai.azure.com/`` -> its host."""
    text = spec.strip().lower()
    host = urlsplit(text).hostname if "://" in text else text.split("/", 1)[0]
    host = (host or "").rstrip(".")
    if host and "." not in host:
        host += ".openai.azure.com"
    if not host or not any(host.endswith(suffix) and host != suffix[1:] for suffix in AzureOpenAI.hosts) \
            or not _RESOURCE_HOST.fullmatch(host):
        raise ValueError(f"bad Azure resource {spec!r}: use a resource name (my-res), its host "
                         "(my-res.openai.azure.com) or its endpoint URL")
    return host


def _below_openai(path: str) -> tuple[str | None, str] | None:
    """(deployment or None, path below it) of an Azure OpenAI path; None if it is none."""
    path = path.split("?", 1)[0]
    if path.startswith(_DEPLOYMENTS):
        deployment, sep, rest = path[len(_DEPLOYMENTS) :].partition("/")
        return (unquote(deployment), "/" + rest) if deployment and sep else None
    for prefix in ("/openai/v1/", "/openai/"):
        if path.startswith(prefix):
            return None, path[len(prefix) - 1 :]
    return None


PROVIDERS = (AzureOpenAI(),)
