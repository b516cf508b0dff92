"""What can go wrong in the business rules, as nouns. The domain knows nothing of HTTP:
errors.py chooses each one's status code."""

from __future__ import annotations


class DomainError(Exception):
    """A rule of the domain refused the request; the message is fit for the client."""


class NotFound(DomainError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} does not exist")
        self.what = what


class Duplicate(DomainError):
    def __init__(self, what: str, field: str, value: object) -> None:
        super().__init__(f"a {what} with {field} {value!r} exists")
        self.what = what


class OutOfStock(DomainError):
    def __init__(self, product_id: int) -> None:
        super().__init__(f"product {product_id} has too little stock")
        self.product_id = product_id
