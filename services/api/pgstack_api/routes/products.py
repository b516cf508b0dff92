"""/api/products: list (keyset pages), create, get."""

from __future__ import annotations

from pgstack_api.domain import catalog
from pgstack_api.endpoints import Endpoint, Link, Resource
from pgstack_api.schemas import IdPath, PageParams, Product, ProductIn, ProductPage

resources = [
    Resource(
        "/api/products",
        Endpoint(
            "GET",
            "listProducts",
            "List products, oldest first (keyset pagination: pass `next_after` as `after`)",
            catalog.list_products,
            ProductPage,
            input=PageParams,
            source="query",
        ),
        Endpoint(
            "POST",
            "createProduct",
            "Create a product",
            catalog.create_product,
            Product,
            status=201,
            input=ProductIn,
            errors=(409,),
            writes=True,
            location=lambda product: f"/api/products/{product.id}",
            links={
                "GetProduct": Link("getProduct", {"id": "$response.body#/id"}),
                "OrderProduct": Link(
                    "placeOrder",
                    request_body={"items": [{"product_id": "$response.body#/id", "quantity": 1}]},
                    description="an order for one of this product",
                ),
            },
        ),
    ),
    Resource(
        "/api/products/{id:int}",
        Endpoint(
            "GET",
            "getProduct",
            "Get a product",
            lambda db, path: catalog.get_product(db, path.id),
            Product,
            input=IdPath,
            source="path",
            errors=(404,),
            noun="product",
        ),
    ),
]
