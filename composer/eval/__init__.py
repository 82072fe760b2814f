"""Downstream evaluation of an exported bundle with lm-evaluation-harness (the optional `eval` extra):

    from composer.eval import evaluate_bundle
    results = evaluate_bundle("bundle/", ["hellaswag", "arc_easy"], device="cuda")

or `composer eval bundle/ --tasks hellaswag,arc_easy`. The bundle is wrapped as an lm-eval `LM`
(`composer.eval.lm.ComposerLM`): log-likelihoods and greedy generation run on the bundle's own model and
tokenizer, through Composer's loader (safetensors) and the model's decoding state.
"""

from composer.eval.harness import evaluate_bundle, require_lm_eval

__all__ = ["evaluate_bundle", "require_lm_eval"]
