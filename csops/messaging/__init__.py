"""Messaging: follow-up rules, sandboxed templates, the durable outbox and its channels."""
