"""An exported bundle as an lm-evaluation-harness language model (`lm_eval.api.model.TemplateLM`).

TemplateLM turns (context, continuation) strings into token ids with `tok_encode`; this class scores them
(`_loglikelihood_tokens`), scores whole documents in windows of the model's context (`loglikelihood_rolling`,
with lm-eval's own window helpers) and generates greedily until a stop string (`generate_until`), reading
each new token through the model's decoding state (KV cache / recurrent state) rather than the whole sequence.

Inputs are never padded (the model has no padding mask): a batch holds sequences of one length.
The token that stands before a document (`prefix_token_id`) is the tokenizer's eos token when it has one (as
every tokenizer Composer writes into a bundle does, and as lm-eval's own `--model hf` reads it, so both give the
same numbers), else the newline (the text task joins documents with newlines), else id 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from composer.errors import UserError
from composer.export.load import load
from composer.export.tokenizer import CONFIG_FILE, TOKENIZER_FILE
from composer.model import HybridLM

DEFAULT_MAX_GEN_TOKS = 256


class ComposerLM(TemplateLM):
    """lm-eval's view of a bundle: `ComposerLM("bundle/", device="cuda", batch_size=32)`."""

    def __init__(self, bundle: str | Path, device: str = "cpu", batch_size: int = 16, max_length: int | None = None):
        super().__init__()
        from tokenizers import Tokenizer

        bundle = Path(bundle)
        if not (bundle / TOKENIZER_FILE).is_file():
            raise UserError(f"{bundle}: the bundle has no {TOKENIZER_FILE}; export it again with this Composer")
        self.model: HybridLM = load(bundle, device)
        self.tokenizer = Tokenizer.from_file(str(bundle / TOKENIZER_FILE))
        self._device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.max_length = int(max_length or self.model.spec.max_seq_len)
        self._eot, self._has_eos = self._find_eot(bundle)

    def _find_eot(self, bundle: Path) -> tuple[int, bool]:
        """(the token before a document, whether it is a real end-of-text token that ends generation)."""
        config_file = bundle / CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        eos = config.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and self.tokenizer.token_to_id(eos) is not None:
            return self.tokenizer.token_to_id(eos), True
        newline = self.tok_encode("\n")
        return (newline[0] if len(newline) == 1 else 0), False

    @property
    def eot_token_id(self) -> int:
        return self._eot

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=False).ids

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=False)

    # -- scoring -----------------------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding gives the continuation), per request.
        The context is cut from the left to fit the model's context length."""
        inputs = []
        for _, context, continuation in requests:
            if len(continuation) > self.max_length:
                raise ValueError(f"a continuation of {len(continuation)} tokens is longer than the model's context "
                                 f"({self.max_length})")
            tokens = (list(context) + list(continuation))[-(self.max_length + 1):]
            inputs.append((tokens[:-1], tokens[-len(continuation):] if continuation else []))
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, (tokens, target) in enumerate(inputs):
            if target:   # an empty continuation has log-likelihood 0
                by_length[len(tokens)].append(i)
        out: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
        with torch.inference_mode():
            for _, indices in sorted(by_length.items(), reverse=True):
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start:start + self.batch_size]
                    batch = torch.tensor([inputs[i][0] for i in chunk], device=self._device)
                    logprobs = torch.log_softmax(self.model(batch).logits.float(), dim=-1)
                    for row, i in enumerate(chunk):
                        target = inputs[i][1]
                        scores = logprobs[row, -len(target):]
                        wanted = torch.tensor(target, device=self._device)
                        total = float(scores.gather(1, wanted[:, None]).sum())
                        out[i] = (total, bool(torch.equal(scores.argmax(-1), wanted)))
        for (strings, _, _), answer in zip(requests, out):
            if strings is not None:
                self.cache_hook.add_partial("loglikelihood", strings, answer)
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """The log-likelihood of each whole document, in disjoint windows of the model's context."""
        out = []
        for request in requests:
            (string,) = request.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            scores = self._loglikelihood_tokens([(None, context, target) for context, target in windows])
            total = sum(score for score, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out

    # -- generation --------------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """Greedy continuation of each context until one of its stop strings (cut off) or `max_gen_toks`."""
        out = []
        for request in requests:
            context, gen_kwargs = request.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or [self.tok_decode([self.eot_token_id])]
            until = [until] if isinstance(until, str) else list(until)
            max_new = max(1, min(int(gen_kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS)), self.max_length - 1))
            text = self._greedy(self.tok_encode(context) or [self.prefix_token_id], until, max_new)
            self.cache_hook.add_partial("generate_until", (context, request.args[1]), text)
            out.append(text)
        return out

    def _greedy(self, context: list[int], until: list[str], max_new: int) -> str:
        context = context[-(self.max_length - max_new):]
        generated: list[int] = []
        with torch.inference_mode():
            state = self.model.init_state(1, self._device)
            logits, state, _ = self.model(torch.tensor([context], device=self._device), state)
            for _ in range(max_new):
                token = int(logits[0, -1].argmax())
                if self._has_eos and token == self.eot_token_id:
                    break
                generated.append(token)
                text = self.tok_decode(generated)
                if any(stop in text for stop in until):
                    break
                logits, state, _ = self.model(torch.tensor([[token]], device=self._device), state)
        text = self.tok_decode(generated)
        cut = min((text.index(stop) for stop in until if stop and stop in text), default=len(text))
        return text[:cut]
