"""Offline prompt token counting for budget reservations: tiktoken encodings shipped with pouch
(``encodings``), the pieces a prompt is counted from (``pieces``) and the shared estimates
(``estimates``); ``count`` counts a request with its provider folder's request shape and
tokenizer (``pouch.providers.registry``)."""
