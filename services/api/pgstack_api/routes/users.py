"""/api/users: create, get."""

from __future__ import annotations

from pgstack_api.domain import catalog
from pgstack_api.endpoints import Endpoint, Link, Resource
from pgstack_api.schemas import IdPath, User, UserIn

resources = [
    Resource(
        "/api/users",
        Endpoint(
            "POST",
            "createUser",
            "Create a user (the email is unique, compared without ASCII case)",
            catalog.create_user,
            User,
            status=201,
            input=UserIn,
            errors=(409,),
            writes=True,
            location=lambda user: f"/api/users/{user.id}",
            links={
                "GetUser": Link("getUser", {"id": "$response.body#/id"}),
                "PlaceOrder": Link(
                    "placeOrder",
                    request_body={"user_id": "$response.body#/id"},
                    description="an order by this user",
                ),
            },
        ),
    ),
    Resource(
        "/api/users/{id:int}",
        Endpoint(
            "GET",
            "getUser",
            "Get a user",
            lambda db, path: catalog.get_user(db, path.id),
            User,
            input=IdPath,
            source="path",
            errors=(404,),
            noun="user",
        ),
    ),
]
