"""An example osad-bench method plugin (see method.py)."""
