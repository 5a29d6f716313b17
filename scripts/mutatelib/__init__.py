"""Mutation testing of pouch's money modules (scripts/mutate): ``mutants`` makes small faults
in a module's source, ``sandbox`` runs the module's tests against each in a copy of the
checkout, ``report`` prints and saves what survived."""
