"""The search family's settings: the ranking of index-article's index and `tq search`
(``TQ_SEARCH_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from tq.settings import TqSettings


class SearchSettings(TqSettings):
    search_weight_title: float = Field(1.0, gt=0, description="rank weight of a title match")
    search_weight_tags: float = Field(0.6, gt=0, description="rank weight of a tag match")
    search_weight_body: float = Field(0.3, gt=0, description="rank weight of a body match")


@lru_cache(maxsize=1)
def get_search_settings() -> SearchSettings:
    return SearchSettings()
