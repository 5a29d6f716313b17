"""LLM providers: one folder per API format, looked up by host (``registry``).

A provider folder is a package holding everything about one API format: which hosts and paths
it owns and how it reads a request (its ``Provider``), usage from JSON bodies and from streams,
errors in its own shape, credentials, its request shapes (``Api``: prompt counting, the text an
echo mock answers with, the LLM view's transcript) and how its models are tokenized
(``Tokenizer``), and its mock. The interface is in ``base``; the package's ``PROVIDERS`` lists
its providers; adding a folder to ``registry.FOLDERS`` is the one change outside it.

Vendors that speak another's format are configurations of that format's provider, in folders
of their own: ``azure`` and ``compatible`` (Groq, Mistral, DeepSeek, xAI, OpenRouter, Together,
Fireworks, self-hosted servers) configure ``openai``'s. What every folder shares is here too:
``json_body`` (reading a request body as the provider will), ``sse`` (splitting event streams),
``values`` (reading JSON of any shape), ``mocking`` and ``transcript_format`` (the pieces of mocks
and transcripts), and ``transcript`` (the LLM view's renderer, which never fails).
"""
