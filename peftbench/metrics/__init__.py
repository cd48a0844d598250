"""Efficiency measurements (eff/ namespace): parameters, memory, throughput, time, size on disk."""
