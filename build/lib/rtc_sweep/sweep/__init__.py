"""The sweep shell: the Hydra schema and its one conversion, one job (evaluate, app) and the launchers. Imports the
core and the report layers, never the training package (docs/architecture.md)."""
