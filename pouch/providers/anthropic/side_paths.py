"""What Claude Code calls on api.anthropic.com besides the Messages API, family by family, and
what pouch does with each (``pouch.providers.side_paths``; docs/side-paths.md says why).

The families are what Claude Code 2.1 calls (seen in its 2.1.197 and 2.1.332 builds); the
local answers are what it reads as "nothing to apply": no managed settings (204), no policy
restrictions, an empty bootstrap, fast mode off, no feature flags, empty MCP lists, telemetry
accepted.
"""

from __future__ import annotations

from pouch.providers.base import Reply
from pouch.providers.local import LOCAL_HEADERS, json_reply
from pouch.providers.side_paths import ANY, PASS, REFUSE, family

_ORGANISATION = ("it is the organisation's: forwarded with the gateway's Anthropic credential in place of "
                 "the pouch key")
_PUBLIC = "Claude Code calls it without a key: forwarded with no credential at all"
_ACCOUNT = ("it holds a Claude.ai account's own data, which a pouch key (an API key) has none of: "
            "forwarded only with the client's own login (observe mode)")

SIDE_PATHS = (
    # Managed settings an organisation's admins set for Claude Code. 204: "no settings found".
    family("claude_code.settings", "GET", r"/api/claude_code/settings", PASS,
           f"Claude Code's managed settings: {_ORGANISATION}", answer=Reply(204, b"", dict(LOCAL_HEADERS))),
    family("claude_code.policy_limits", "GET", r"/api/claude_code/policy_limits", PASS,
           f"the organisation's policy limits for Claude Code: {_ORGANISATION}",
           answer=json_reply({"restrictions": {}, "compliance_taints": [], "monitoring_notice": None,
                              "defaults": {}})),
    family("claude_cli.bootstrap", "GET", r"/api/claude_cli/bootstrap", PASS,
           f"Claude Code's start-up data (the organisation's model options): {_ORGANISATION}",
           answer=json_reply({"client_data": None, "additional_model_options": []})),
    family("claude_code.metrics_enabled", "GET", r"/api/claude_code/organizations/metrics_enabled", PASS,
           f"whether the organisation collects Claude Code metrics: {_ORGANISATION}",
           answer=json_reply({"metrics_logging_enabled": False})),
    family("claude_code.fast_mode", "GET", r"/api/claude_code_penguin_mode", PASS,
           f"whether the organisation allows Claude Code's fast mode: {_ORGANISATION}",
           answer=json_reply({"enabled": False, "disabled_reason": "preference"})),
    # GrowthBook's remote evaluation: the feature flags and experiments Claude Code runs with,
    # evaluated for the organisation the credential belongs to.
    family("feature_flags", "POST", r"/api/eval/[A-Za-z0-9_-]+", PASS,
           f"Claude Code's feature flags, evaluated for the organisation: {_ORGANISATION}",
           answer=json_reply({"features": {}})),
    family("mcp_registry", "GET", r"/mcp-registry/v0/servers", PASS,
           f"the public registry of MCP servers: {_PUBLIC}", credential=False,
           answer=json_reply({"servers": [], "metadata": {"count": 0}})),
    family("mcp_directory", "GET", r"/api/directory/servers", PASS,
           f"the public directory of MCP servers: {_PUBLIC}", credential=False,
           answer=json_reply({"servers": [], "next_cursor": None})),
    family("mcp_directory.server_urls", "GET", r"/api/directory/server-urls", PASS,
           f"the URLs of the official MCP servers: {_PUBLIC}", credential=False, answer=json_reply({"urls": []})),
    family("hello", "GET", r"/api/hello", PASS,
           f"a connectivity check (claude doctor): {_PUBLIC}", credential=False, answer=json_reply({})),
    # Telemetry: Anthropic's product analytics take events without a key (Claude Code retries
    # without one when refused), so none goes; the organisation's own Claude Code metrics need it.
    family("telemetry.event_logging", "POST", r"/api/event_logging/(?:v2/)?batch", PASS,
           "Claude Code's event logging (product analytics): forwarded with no credential at all, "
           "or answered locally with pouch_telemetry=block", credential=False, telemetry=True, answer=json_reply({})),
    family("telemetry.claude_code_metrics", "POST", r"/api/claude_code/metrics", PASS,
           f"Claude Code's usage metrics for the organisation's dashboards: {_ORGANISATION}, "
           "or answered locally with pouch_telemetry=block", telemetry=True, answer=json_reply({})),
    family("oauth", ANY, r"/api/oauth/.*", REFUSE, f"Claude.ai sign-in and account endpoints: {_ACCOUNT}"),
    family("claude_code.account", ANY,
           r"/api/claude_code/(?:memory|team_memory|notification/preferences|skills|discovery/.*)", REFUSE,
           f"Claude Code's per-account features (memory, team memory, notifications, skills): {_ACCOUNT}"),
)
