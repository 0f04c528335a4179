"""Training of the policies rtc_sweep evaluates: ``python -m rtc_sweep.train task=...`` (rtc_sweep/train/conf).

Route 2, the shipped defaults: success-filtered self-imitation of the flow policy (``self_imitation``).
Route 1, as the benchmark: expert PPO (``ppo``), demonstrations from the best experts (``collect``), flow BC
and its training-time RTC fine-tune (``flow``, ``flow_tt``). Both routes share the flow trainer (``flow_bc``)
and the sharded rollouts (``rollout``).
"""
