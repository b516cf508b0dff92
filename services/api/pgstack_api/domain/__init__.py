"""Business rules, as functions of an open transaction (an AsyncConnection)."""
