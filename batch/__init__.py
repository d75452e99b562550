"""Batch layer: staging -> raw loads in Postgres, runs, refresh modes, jobs."""
