"""Training runs: start, queue, snapshot, versions and publishing."""
