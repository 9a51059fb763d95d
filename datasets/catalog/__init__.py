"""One module per registered dataset plugin (and its converter, if it has one)."""
