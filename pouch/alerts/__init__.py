"""Budget alerts: events about a key's money, sent to webhooks through an outbox in the store.

``events`` says, as pure functions, which thresholds a settlement crossed and what each event's
body and message are. ``outbox`` writes an event into the store in the very transaction that
detects it (a settlement, a budget refusal, the periodic expiry check): a unique index on
(key, event, period start, threshold, ref) makes each event once per key per period however many
gateways settle at once, and the row survives any crash. ``delivery`` claims due rows with a
lease, POSTs them (signed, Slack-shaped for Slack URLs), and retries with backoff until each
target has it or the tries run out. The gateway runs it in ``addons/alerts.py``.
"""
