"""pouch: a self-hosted LLM API gateway built as a chain of mitmproxy addons."""
