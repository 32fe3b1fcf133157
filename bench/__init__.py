"""Benchmarks of ovs-mesh (run as `python -m bench.<name>`); results live in bench/results/."""
