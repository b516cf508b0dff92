"""Request ids, body limits and pagination: the pure parts of request handling."""

from __future__ import annotations

import pytest
from pgstack_api.domain.orders import merged_quantities
from pgstack_api.middleware import content_length, request_id_for, valid_request_id
from pgstack_api.schemas import OrderIn, PageParams
from pydantic import ValidationError
from starlette.datastructures import Headers


@pytest.mark.parametrize("value", ["abc", "test-req-42", "a" * 128, "0b5e:7f.x_y/z+1="])
def test_well_formed_request_ids_are_honoured(value: str) -> None:
    assert valid_request_id(value)
    assert request_id_for(value) == value


@pytest.mark.parametrize(
    "value", ["", "a" * 129, "has space", "new\nline", 'quote"', "<script>", "é"]
)
def test_other_request_ids_are_replaced_by_a_fresh_one(value: str) -> None:
    assert not valid_request_id(value)
    fresh = request_id_for(value)
    assert fresh != value and valid_request_id(fresh) and len(fresh) == 32


def test_without_a_header_a_request_id_is_minted() -> None:
    assert request_id_for(None) != request_id_for(None)


@pytest.mark.parametrize(
    ("raw", "parsed"), [(None, None), ("0", 0), ("1048577", 1048577), ("-1", -1), ("1e3", -1)]
)
def test_content_length_is_parsed_strictly(raw: str | None, parsed: int | None) -> None:
    headers = Headers({} if raw is None else {"content-length": raw})
    assert content_length(headers) == parsed


def test_pages_default_to_twenty_from_the_start() -> None:
    page = PageParams.model_validate({})
    assert (page.limit, page.after) == (20, 0)


def test_query_strings_are_coerced_to_page_numbers() -> None:
    page = PageParams.model_validate({"limit": "5", "after": "40"})
    assert (page.limit, page.after) == (5, 40)


@pytest.mark.parametrize(
    "query", [{"limit": "0"}, {"limit": "101"}, {"limit": "x"}, {"after": "-1"}, {"offset": "3"}]
)
def test_bad_page_parameters_are_refused(query: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PageParams.model_validate(query)


def test_order_lines_are_merged_and_taken_in_product_id_order() -> None:
    order = OrderIn.model_validate(
        {
            "user_id": 1,
            "items": [
                {"product_id": 9, "quantity": 1},
                {"product_id": 3, "quantity": 2},
                {"product_id": 9, "quantity": 4},
            ],
        }
    )
    assert merged_quantities(order) == [(3, 2), (9, 5)]


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "1", "items": [{"product_id": 1, "quantity": 1}]},  # strings are not ids
        {"user_id": 1, "items": []},
        {"user_id": 1, "items": [{"product_id": 1, "quantity": 0}]},
        {"user_id": 1, "items": [{"product_id": 1, "quantity": True}]},
        {"user_id": 1, "items": [{"product_id": 1, "quantity": 1}], "coupon": "x"},
    ],
)
def test_malformed_orders_are_refused(body: object) -> None:
    with pytest.raises(ValidationError):
        OrderIn.model_validate(body)
