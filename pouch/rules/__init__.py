"""The money rules, as pure functions: what a request may cost before it is sent
(``admission``) and what it is charged once it has ended (``settlement``). No mitmproxy, no
store: the chain's links gather the facts, call a rule, and record its answer."""
