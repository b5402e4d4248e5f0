"""Targets and webhooks: from score to action (targets.md)."""
