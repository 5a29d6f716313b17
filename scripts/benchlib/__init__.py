"""The pieces of ``scripts/bench``: servers, load generators, in-process timings, the report."""
