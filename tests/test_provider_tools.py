"""Paid server-side tools, provider by provider: which tools a request lets the provider run,
the bound on their calls, the bound pouch injects, and the calls read back from responses."""

from __future__ import annotations

import json

import pytest

from pouch.domain.errors import BadRequest
from pouch.domain.usage import Usage
from pouch.providers.anthropic import MESSAGES, Anthropic
from pouch.providers.anthropic.usage import MessagesStreamTracker, usage_from_dict
from pouch.providers.base import ToolBound
from pouch.providers.gemini import GENERATE, Gemini
from pouch.providers.openai import OpenAI
from pouch.providers.openai.streams import ResponsesStreamTracker
from pouch.providers.openai.usage import usage_field

OPENAI, ANTHROPIC, GEMINI = OpenAI(), Anthropic(), Gemini()
RESPONSES = OPENAI.endpoint("POST", "/v1/responses")
CHAT = OPENAI.endpoint("POST", "/v1/chat/completions")


def responses_call(**body):
    return OPENAI.read_call(RESPONSES, "/v1/responses", {"model": "gpt-4o", "input": "hi", **body})


class TestOpenAIResponses:
    @pytest.mark.parametrize("tools, bound, expected", [
        ([{"type": "web_search"}], None, (ToolBound(("web_search",), None),)),
        ([{"type": "web_search_2025_08_26"}], 4, (ToolBound(("web_search",), 4),)),
        ([{"type": "web_search_preview"}], None, (ToolBound(("web_search_preview",), None),)),
        ([{"type": "web_search_preview_2025_03_11"}], 1, (ToolBound(("web_search_preview",), 1),)),
        # one max_tool_calls bounds every built-in tool together
        ([{"type": "file_search", "vector_store_ids": ["vs"]}, {"type": "mcp", "server_label": "x"},
          {"type": "web_search"}], 2, (ToolBound(("file_search", "mcp", "web_search"), 2),)),
        # tools the client runs: no fee, no round at the provider
        ([{"type": "function", "name": "f"}, {"type": "custom", "name": "c"}, {"type": "computer_use_preview"},
          {"type": "local_shell"}, {"type": "apply_patch"}], None, ()),
        # a namespace of function/custom tools (Codex's multi_agent_v1) runs on the client too
        ([{"type": "namespace", "name": "multi_agent_v1", "description": "agents",
           "tools": [{"type": "function", "name": "spawn"}, {"type": "custom", "name": "c"}]}], None, ()),
        # what a namespace holds is checked like any tool: a hosted one in it runs at OpenAI
        ([{"type": "namespace", "name": "n", "description": "d", "tools": [{"type": "web_search"}]}], 2,
         (ToolBound(("web_search",), 2),)),
    ])  # fmt: skip
    def test_server_tools_and_their_bound(self, tools, bound, expected):
        call = responses_call(tools=tools, **({} if bound is None else {"max_tool_calls": bound}))
        assert call.server_tools == expected and call.unmetered_tools == ()

    @pytest.mark.parametrize("tools, extra, unmetered", [
        ([{"type": "code_interpreter", "container": {"type": "auto"}}], {}, ("code_interpreter",)),
        ([{"type": "image_generation"}, {"type": "web_search"}], {}, ("image_generation",)),
        ([{"type": "some_new_tool"}], {}, ("some_new_tool",)),
        ([{"type": "namespace", "name": "n", "description": "d", "tools": [{"type": "image_generation"}]}], {},
         ("image_generation",)),
        ([], {"prompt": {"id": "pmpt_1"}}, ("stored prompt",)),
        # a hosted container shell runs at OpenAI; only a local one runs on the client
        ([{"type": "shell", "environment": {"type": "container_auto", "memory_limit": "64g"}}], {}, ("shell",)),
        # a hosted tool named only in tool_choice still runs
        ([], {"tool_choice": {"type": "image_generation"}}, ("image_generation",)),
        # billed above the price table
        ([], {"service_tier": "priority"}, ("service_tier \"priority\"",)),
        ([], {"service_tier": "scale"}, ("service_tier \"scale\"",)),
    ])  # fmt: skip
    def test_tools_pouch_cannot_bound_or_price(self, tools, extra, unmetered):
        assert responses_call(tools=tools, **extra).unmetered_tools == unmetered

    @pytest.mark.parametrize("body", [{"tools": {"type": "web_search"}}, {"tools": ["web_search"]},
                                      {"tools": [{"type": "namespace", "name": "n", "tools": "f"}]},
                                      {"tools": [{"type": 3}]}, {"max_tool_calls": -1}, {"max_tool_calls": True},
                                      {"max_tool_calls": "3"}, {"max_tool_calls": 0}])
    def test_unreadable_tools_are_refused(self, body):
        with pytest.raises(BadRequest):
            responses_call(**body)

    @pytest.mark.parametrize("extra", [{"tools": [{"type": "shell"}]},
                                       {"tools": [{"type": "shell", "environment": {"type": "local"}}]},
                                       {"service_tier": "flex"}, {"service_tier": "auto"}, {"service_tier": "default"}])
    def test_what_is_billed_at_the_price_table(self, extra):
        assert responses_call(**extra).unmetered_tools == ()

    def test_the_bound_is_injected_only_where_the_request_set_none(self):
        body = {"model": "gpt-4o", "tools": [{"type": "web_search"}]}
        OPENAI.bound_tools(RESPONSES, body, 3)
        assert body["max_tool_calls"] == 3
        body = {"model": "gpt-4o", "tools": [{"type": "web_search"}], "max_tool_calls": 7}
        OPENAI.bound_tools(RESPONSES, body, 3)
        assert body["max_tool_calls"] == 7

    def test_tool_calls_are_read_from_the_output(self):
        response = {"usage": {"input_tokens": 900, "output_tokens": 20}, "output": [
            {"type": "web_search_call", "id": "ws_1"}, {"type": "web_search_call", "id": "ws_2"},
            {"type": "file_search_call", "id": "fs_1"}, {"type": "reasoning", "id": "rs_1"},
            {"type": "message", "content": []},
        ]}  # fmt: skip
        usage = usage_field("responses", response)
        assert usage == Usage(900, output_tokens=20, tool_calls=(("file_search", 1), ("web_search", 2)))

    def test_a_stream_reports_the_calls_of_its_final_response(self):
        tracker = ResponsesStreamTracker()
        final = ('{"type":"response.completed","response":{"model":"gpt-4o","output":[{"type":"web_search_call"},'
                 '{"type":"message"}],"usage":{"input_tokens":50,"output_tokens":5}}}')
        tracker.feed(b'event: response.output_item.done\ndata: {"type":"response.output_item.done",'
                     b'"item":{"type":"web_search_call"}}\n\n')
        tracker.feed(f"event: response.completed\ndata: {final}\n\n".encode())
        assert tracker.usage().tool_calls == (("web_search", 1),)


class TestOpenAIChat:
    @pytest.mark.parametrize("body, unmetered", [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, ()),
        ({"tools": [{"type": "custom", "custom": {"name": "c"}}]}, ()),
        ({"web_search_options": {}}, ("web_search_options",)),  # search models bill every request
        ({"tools": [{"type": "google_search"}]}, ("google_search",)),  # e.g. Gemini's compatible surface
    ])  # fmt: skip
    def test_only_client_tools_are_metered(self, body, unmetered):
        call = OPENAI.read_call(CHAT, "/v1/chat/completions", {"model": "gpt-4o", "messages": [], **body})
        assert call.unmetered_tools == unmetered and call.server_tools == ()


def messages_call(**body):
    return ANTHROPIC.read_call(MESSAGES, "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 10,
                                                          "messages": [], **body})


class TestAnthropic:
    def test_each_server_tool_has_its_own_bound(self):
        call = messages_call(tools=[
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
            {"type": "web_fetch_20250910", "name": "web_fetch"},
            {"name": "get_weather", "input_schema": {}},
            {"type": "bash_20250124", "name": "bash"}, {"type": "text_editor_20250728", "name": "e"},
            {"type": "computer_20250124", "name": "computer"}, {"type": "custom", "name": "c"},
        ])  # fmt: skip
        assert call.server_tools == (ToolBound(("web_search",), 2), ToolBound(("web_fetch",), None))
        assert call.unmetered_tools == ()

    @pytest.mark.parametrize("body, unmetered", [
        ({"tools": [{"type": "code_execution_20250825", "name": "code_execution"}]}, ("code_execution_20250825",)),
        ({"tools": [{"type": "tool_search_tool_regex_20251119", "name": "t"}]}, ("tool_search_tool_regex_20251119",)),
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}]}, ("mcp_servers",)),
        ({"container": "container_1"}, ("container",)),
        ({"speed": "fast"}, ('speed "fast"',)),  # fast mode: 6x
        ({"inference_geo": "us"}, ('inference_geo "us"',)),  # US-only inference: 1.1x
    ])  # fmt: skip
    def test_what_pouch_cannot_bound(self, body, unmetered):
        assert messages_call(**body).unmetered_tools == unmetered

    @pytest.mark.parametrize("uses", [-1, 0, True, "2", 1001])
    def test_a_bad_max_uses_is_refused(self, uses):
        with pytest.raises(BadRequest, match="max_uses"):
            messages_call(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": uses}])

    def test_the_bound_is_injected_into_each_unbounded_server_tool(self):
        body = {"tools": [{"type": "web_search_20250305", "name": "web_search"},
                          {"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 1},
                          {"name": "get_weather", "input_schema": {}}]}
        ANTHROPIC.bound_tools(MESSAGES, body, 3)
        assert [tool.get("max_uses") for tool in body["tools"]] == [3, 1, None]

    def test_server_tool_use_is_read_as_tool_calls(self):
        usage = usage_from_dict({"input_tokens": 10, "output_tokens": 2,
                                 "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 0}})
        assert usage.tool_calls == (("web_search", 3),)

    def test_a_stream_takes_the_counts_of_message_delta(self):
        tracker = MessagesStreamTracker()
        tracker.feed(b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-haiku-4-5",'
                     b'"usage":{"input_tokens":10,"output_tokens":1}}}\n\n')
        tracker.feed(b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
                     b'"usage":{"input_tokens":4010,"output_tokens":30,"server_tool_use":{"web_search_requests":2}}}\n\n')
        assert tracker.usage() == Usage(4010, output_tokens=30, tool_calls=(("web_search", 2),))


class TestGemini:
    def call(self, tools):
        body = {"contents": [{"parts": [{"text": "hi"}]}], "tools": tools}
        return GEMINI.read_call(GENERATE, "/v1beta/models/gemini-2.5-flash:generateContent", body)

    def test_googles_own_bounds(self):
        call = self.call([{"urlContext": {}}, {"code_execution": {}}, {"functionDeclarations": [{"name": "f"}]}])
        assert call.server_tools == (ToolBound(("url_context",), 1), ToolBound(("code_execution",), 5))
        assert call.unmetered_tools == ()

    @pytest.mark.parametrize("tool", [{"googleSearch": {}}, {"google_search": {}}, {"googleSearchRetrieval": {}},
                                      {"googleMaps": {}}, {"fileSearch": {}}])
    def test_search_grounding_is_billed_per_query_and_cannot_be_bounded(self, tool):
        assert self.call([tool]).unmetered_tools == tuple(tool)

    def test_nothing_to_inject(self):
        body = {"tools": [{"urlContext": {}}]}
        GEMINI.bound_tools(GENERATE, body, 3)
        assert body == {"tools": [{"urlContext": {}}]}


class TestSearchModelsAndExtensions:
    @pytest.mark.parametrize("model", ["gpt-4o-search-preview", "gpt-4o-mini-search-preview-2025-03-11",
                                       "gpt-5-search-api"])
    def test_a_search_model_bills_a_search_on_every_request(self, model):
        call = OPENAI.read_call(CHAT, "/v1/chat/completions", {"model": model, "messages": []})
        assert call.unmetered_tools == (f"the web search of {model}",)

    def test_geminis_compatible_surface_reads_the_google_extension(self):
        endpoint = GEMINI.endpoint("POST", "/v1beta/openai/chat/completions")
        body = {"model": "gemini-2.5-flash", "messages": [],
                "google": {"cached_content": "cachedContents/abc", "thinking_config": {"thinking_budget": 0}}}
        call = GEMINI.read_call(endpoint, "/v1beta/openai/chat/completions", body)
        # a cached content is hidden input and may hold tools (search grounding) pouch cannot see
        assert call.hidden_input and call.unmetered_tools == ("google.cached_content",)
        body["google"] = {"tools": [{"google_search": {}}]}
        assert GEMINI.read_call(endpoint, "/v1beta/openai/chat/completions", body).unmetered_tools == ("google.tools",)
        nested = {"model": "gemini-2.5-flash", "messages": [],
                  "extra_body": {"google": {"cached_content": "cachedContents/abc", "thinking_config": {}}}}
        call = GEMINI.read_call(endpoint, "/v1beta/openai/chat/completions", nested)
        assert call.hidden_input and call.unmetered_tools == ("extra_body.google.cached_content",)
        nested["extra_body"] = {"google": {"thinking_config": {}}}
        assert GEMINI.read_call(endpoint, "/v1beta/openai/chat/completions", nested).unmetered_tools == ()

    def test_a_native_cached_content_or_a_paid_tier_is_refused(self):
        body = {"contents": [{"parts": [{"text": "hi"}]}], "cachedContent": "cachedContents/abc"}
        call = GEMINI.read_call(GENERATE, "/v1beta/models/gemini-2.5-flash:generateContent", body)
        assert call.hidden_input and call.unmetered_tools == ("cachedContent",)
        body = {"contents": [{"parts": [{"text": "hi"}]}], "serviceTier": "priority"}
        call = GEMINI.read_call(GENERATE, "/v1beta/models/gemini-2.5-flash:generateContent", body)
        assert call.unmetered_tools == ('serviceTier "priority"',)

    @pytest.mark.parametrize("vendor, field, value", [("openrouter", "models", ["a/b", "c/d"]),
                                                      ("openrouter", "plugins", [{"id": "web"}]),
                                                      ("openrouter", "route", "fallback"),
                                                      ("xai", "search_parameters", {"mode": "on"})])
    def test_compatible_vendors_fields_that_bill_beyond_the_model(self, vendor, field, value):
        from pouch.providers.registry import PROVIDERS

        provider = PROVIDERS[vendor]
        path = provider.base_path + "/chat/completions"
        call = provider.read_call(provider.endpoint("POST", path), path, {"model": "m", "messages": [], field: value})
        assert call.unmetered_tools == (field,)

    def test_a_compatible_vendors_responses_report_their_tool_calls(self):
        from pouch.providers.registry import PROVIDERS

        response = {"usage": {"input_tokens": 10, "output_tokens": 2}, "output": [{"type": "web_search_call"}]}
        assert PROVIDERS["openrouter"].read_usage("responses", response).tool_calls == (("web_search", 1),)


class TestRunningTotals:
    """vLLM-style servers (continuous_usage_stats) report usage in every chunk: a running total
    is not what the stream cost until the stream says it is done."""

    CHUNK = ('data: {"choices":[{"index":0,"delta":{"content":"%s"},"finish_reason":%s}],'
             '"usage":{"prompt_tokens":10,"completion_tokens":%d}}\n\n')

    def test_a_stream_cut_after_a_running_total_has_no_usage(self):
        from pouch.providers.openai.streams import ChatStreamTracker

        tracker = ChatStreamTracker("chat", injected_usage=False)
        tracker.feed((self.CHUNK % ("one", "null", 1)).encode())
        tracker.feed((self.CHUNK % ("two", "null", 2)).encode())
        assert tracker.usage() is None  # cut here: charged its reservation, not 2 tokens

    @pytest.mark.parametrize("ending", [
        CHUNK % ("three", '"length"', 3),
        CHUNK % ("three", "null", 3) + "data: [DONE]\n\n",
        CHUNK % ("three", "null", 3) + 'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3}}\n\n',
    ])  # fmt: skip
    def test_the_total_counts_once_the_stream_is_done(self, ending):
        from pouch.providers.openai.streams import ChatStreamTracker

        tracker = ChatStreamTracker("chat", injected_usage=False)
        tracker.feed((self.CHUNK % ("one", "null", 1)).encode())
        tracker.feed(ending.encode())
        assert tracker.usage() == Usage(10, output_tokens=3)

    def test_googles_tool_calls_are_read_from_the_response(self):
        from pouch.providers.gemini.usage import GeminiStreamTracker, usage_from_body

        response = {"candidates": [{"content": {"parts": [
            {"executableCode": {"code": "print(1)"}}, {"codeExecutionResult": {"output": "1"}},
            {"executableCode": {"code": "print(2)"}}, {"text": "done"}]}, "finishReason": "STOP",
            "urlContextMetadata": {"urlMetadata": [{"retrievedUrl": "a"}, {"retrievedUrl": "b"}]}}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "toolUsePromptTokenCount": 50}}
        usage, _ = usage_from_body(response)
        assert usage.input_tokens == 60 and usage.tool_calls == (("code_execution", 2), ("url_context", 1))
        tracker = GeminiStreamTracker()
        tracker.feed(f"data: {json.dumps(response)}\r\n\r\n".encode())
        tracker.feed(b"")
        assert tracker.usage() == usage
