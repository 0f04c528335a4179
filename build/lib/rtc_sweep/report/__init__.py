"""Results without JAX: the results.csv contract, statistics, figures, aggregation and report.html. Imports only
``rtc_sweep.io`` from outside this package, never JAX (docs/architecture.md)."""
