"""Business rules, as functions of an open connection or transaction (an AsyncConnection).
They return response models (schemas.py) and raise domain errors (domain/errors.py)."""
