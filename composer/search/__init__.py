"""Architecture search: `search(space)` runs it; see composer/search/runner.py and composer/runs.py.

The package itself is callable, so `import composer; composer.search("space.yaml")` works as well as
`from composer.search import search`.
"""

import sys
import types

from composer.search.aggregate import majority_vote, select_top
from composer.search.runner import SearchResult, search
from composer.search.space import SearchSpace, load_space

__all__ = ["SearchResult", "SearchSpace", "load_space", "majority_vote", "search", "select_top"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs) -> SearchResult:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
