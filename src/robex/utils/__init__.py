"""Shared helpers: atomic output writing (io), device and seeds (runtime), sharding, the Hydra stage edge (hydra), errors."""
