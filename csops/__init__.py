"""csops: customer-service operations for online shops."""

__version__ = "0.1.0"
