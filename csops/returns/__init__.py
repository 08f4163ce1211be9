"""Return batches decided against the written policy in ``[returns]`` (docs/returns.md)."""
