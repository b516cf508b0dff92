"""/api/orders: place (takes stock), get."""

from __future__ import annotations

from pgstack_api.domain import orders
from pgstack_api.endpoints import Endpoint, Link, Resource
from pgstack_api.schemas import IdPath, Order, OrderIn

resources = [
    Resource(
        "/api/orders",
        Endpoint(
            "POST",
            "placeOrder",
            "Place an order: takes stock atomically; 409 out_of_stock if any line is short. "
            "Send an Idempotency-Key to retry safely.",
            orders.create_order,
            Order,
            status=201,
            input=OrderIn,
            errors=(404, 409),
            writes=True,
            location=lambda order: f"/api/orders/{order.id}",
            links={
                "GetOrder": Link("getOrder", {"id": "$response.body#/id"}),
                "GetBuyer": Link("getUser", {"id": "$response.body#/user_id"}),
                "GetFirstProduct": Link("getProduct", {"id": "$response.body#/items/0/product_id"}),
                "OrderAgain": Link(
                    "placeOrder",
                    request_body={
                        "user_id": "$response.body#/user_id",
                        "items": [
                            {"product_id": "$response.body#/items/0/product_id", "quantity": 1}
                        ],
                    },
                    description="the same buyer orders one more of the first product",
                ),
            },
        ),
    ),
    Resource(
        "/api/orders/{id:int}",
        Endpoint(
            "GET",
            "getOrder",
            "Get an order with its items",
            lambda db, path: orders.get_order(db, path.id),
            Order,
            input=IdPath,
            source="path",
            errors=(404,),
            noun="order",
        ),
    ),
]
