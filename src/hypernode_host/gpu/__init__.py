"""GPUs: discovery (NVML or a simulated inventory), worker slots, health and capacity across hosts."""
