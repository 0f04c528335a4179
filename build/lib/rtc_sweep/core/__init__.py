"""The pure JAX core: the Kinetix adapter, the flow policy, its samplers, the delay laws and the asynchronous
timeline, with the frozen configs they take and the policy files they read. Imports only ``rtc_sweep.errors``,
``rtc_sweep.io`` and ``rtc_sweep.runtime`` from outside this package (docs/architecture.md)."""
