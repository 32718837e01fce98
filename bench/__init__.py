"""optflow's benchmark suite: `python -m bench` (see docs/performance.md)."""
