"""The domain, pure: jobs, slots, admission, proofs, results and the wire schema (no Redis, Docker, NVML, sockets)."""
