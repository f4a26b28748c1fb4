"""Benchmarks of agentmesh over real processes and real mTLS: run ``bash scripts/bench.sh``."""
