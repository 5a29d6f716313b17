"""Offline prompt token counting: tiktoken encodings shipped with pouch (``encodings``) and
per-API prompt counts for budget reservations (``count``)."""
