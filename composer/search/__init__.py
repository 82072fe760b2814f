"""Architecture search: `search(space)` runs one; see composer/search/runner.py and composer/runs.py.

    from composer.search import search, load_space, SearchSpace
    result = search("search_spaces/quickstart.yaml", trials=8)

`composer.run_search` is the same function, for `import composer` users (`composer.search` is this package). It
runs the search alone: a space's `confirm:` block runs after it in `composer search`, or from Python with
`composer.confirm.search_then_confirm` (this package never imports the confirmation).
"""

from composer.search.aggregate import majority_vote, select_top
from composer.search.runner import SearchResult, search
from composer.search.space import SearchSpace
from composer.search.space_parse import load_space

__all__ = ["SearchResult", "SearchSpace", "load_space", "majority_vote", "search", "select_top"]
