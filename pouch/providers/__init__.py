"""LLM providers: one small class each, looked up by host."""
