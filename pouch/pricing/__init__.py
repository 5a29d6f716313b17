"""Model prices: the shipped table, operator overrides, and the cost of a request."""
