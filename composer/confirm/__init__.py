"""Confirmation: does what a search found hold up at larger sizes, on the target task, against a baseline?

    from composer.confirm import ConfirmConfig, confirm
    result = confirm("runs/quickstart", ConfirmConfig(sizes=("1M", "4M"), seeds=3, top_k=3,
                                                      task={"name": "text", "params": {"data": "tiny.txt"}}))
    result["verdict"], result["verdicts"], result["transfer"]["4M"]["spearman"], result["comparisons"]["4M"]

The top-k distinct completed trials of the search (by its objective), its consensus and one or more
baselines (the `transformer` of the search's base by default, or spec files) are each fitted to every size
(candidates.py, sizing.py), trained with equal tokens and several seeds as ladder trials (plan.py, run.py),
and compared (analysis.py; statistics in scaling/stats.py). Results: `runs/<name>/confirm.json` (the data
`confirm` returns) and every trial in `runs/<name>/confirm/ladder.json`.
"""

from composer.confirm.plan import ConfirmPlan
from composer.confirm.run import CONFIRM_FILE, confirm, confirm_block, plan_confirm, run_plan, search_then_confirm
from composer.confirm.table import format_confirm, format_plan, format_results
from composer.search.space_confirm import ConfirmConfig, parse_confirm

__all__ = ["CONFIRM_FILE", "ConfirmConfig", "ConfirmPlan", "confirm", "confirm_block", "format_confirm", "format_plan",
           "format_results", "parse_confirm", "plan_confirm", "run_plan", "search_then_confirm"]
