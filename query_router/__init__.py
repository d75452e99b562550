"""Query router: validate analysts' SQL, plan it across Postgres and Redis, execute it exactly."""

from query_router.router import explain, run_query

__all__ = ["explain", "run_query"]
