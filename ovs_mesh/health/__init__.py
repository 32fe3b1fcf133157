"""Per-peer health: active probes through the overlay and what they conclude.

`state.py` is the pure part (one peer's verdict from its probe results, the
jittered schedule, the per-second cap), `prober.py` sends and receives the
probes, `record.py` is the file the agent writes and `status` reads, and
`metrics.py` the Prometheus view.  Nothing here imports the agent or the CLI.
"""
