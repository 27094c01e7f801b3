"""Path parameter types of the web routes, registered with Starlette when this module is imported.

``{name:row_id}`` is a database id: up to 18 digits, so every value fits a 64-bit integer column. Starlette's
``int`` takes any number of digits, and an id too large for the database failed the query (a 500) instead of
finding nothing (a 404).
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class RowIdConvertor(Convertor[int]):
    """A positive or zero integer of at most 18 digits."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("row_id", RowIdConvertor())
