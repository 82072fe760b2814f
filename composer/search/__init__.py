"""Architecture search: `search(space)` runs it; see composer/search/runner.py and composer/runs.py."""

from composer.search.aggregate import majority_vote, select_top
from composer.search.runner import SearchResult, search
from composer.search.space import SearchSpace, load_space

__all__ = ["SearchResult", "SearchSpace", "load_space", "majority_vote", "search", "select_top"]
