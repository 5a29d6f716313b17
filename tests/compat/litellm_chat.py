"""The litellm SDK as a user calls it, for the compatibility suite (tests/test_compat_python.py):
run by the suite's own venv's Python, configured by the environment alone (``pouch env``: the
key in OPENAI_API_KEY, HTTPS_PROXY, SSL_CERT_FILE). Prints the reply, model and usage as JSON."""

import json

import litellm

reply = litellm.completion(model="gpt-4o-mini", messages=[{"role": "user", "content": "say hi"}], num_retries=0)
print(json.dumps({"text": reply.choices[0].message.content, "model": reply.model,
                  "usage": {"prompt_tokens": reply.usage.prompt_tokens, "completion_tokens": reply.usage.completion_tokens}}))
