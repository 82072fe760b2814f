"""Hugging Face wrapper files for a bundle, so that where `transformers` is installed

    AutoModelForCausalLM.from_pretrained(bundle_dir, trust_remote_code=True)

builds the model from `modeling.py` (the standalone source) and loads `model.safetensors`. The files are
fixed text (nothing from the spec is written into them); the architecture travels in `config.json`.
`from_pretrained` is held to the bundle: model.safetensors only, with exactly the model's tensors.

The configuration file imports the bundle's modeling.py, so that each bundle's config class (and with it
the model class transformers registers for it) is its own.

The wrapper owns the HybridLM's sub-modules directly (`embed`, `blocks`, `final_norm`, `head`), so the
weight names are the bundle's. Generation goes through transformers' `generate` with the model's own
decoding state as the cache (`ComposerState`: the per-block states and the number of tokens read), so each
step reads only the new token, as `modeling.load_model().generate` does. transformers has no Cache class
for such a state; `ComposerState` provides what `generate` calls on one (`get_seq_length`,
`reorder_cache` for beam search, `is_compileable`). It travels as `cache` (transformers 5) or
`past_key_values` (4.x). `use_cache=False` re-reads the whole sequence at every step instead.
"""

from __future__ import annotations

from typing import Any

CONFIG_FILE = "configuration_composer.py"
MODEL_FILE = "modeling_composer.py"

CONFIGURATION_SOURCE = '''"""Hugging Face config of a model exported by Composer (its `architecture` field)."""

from transformers import PretrainedConfig

# Ties this config class to the bundle's own model code. transformers reuses the first remote model class
# it registered for a config class, and this file is the same in every bundle: without the import, a
# second bundle loaded in the same process would run the first one's modeling.py.
from .modeling import HybridLM  # noqa: F401


class ComposerConfig(PretrainedConfig):
    model_type = "composer"

    def __init__(self, architecture=None, tie_word_embeddings=True, **kwargs):
        self.architecture = architecture or {}
        self.vocab_size = self.architecture.get("vocab_size", 256)
        self.hidden_size = self.architecture.get("d_model", 0)
        self.use_cache = kwargs.pop("use_cache", True)  # the model's own decoding state (ComposerState)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

MODELING_SOURCE = '''"""Hugging Face causal-LM wrapper of the standalone Composer model in modeling.py."""

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_composer import ComposerConfig
from .modeling import HybridLM, spec_from_data


def _select_batch(state, index):
    """`state` (nested lists / tuples / dicts of tensors, batch first) with its batch rows picked by `index`."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device)) if state.dim() > 0 else state
    if isinstance(state, dict):
        return {key: _select_batch(value, index) for key, value in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_select_batch(value, index) for value in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_select_batch(value, index) for value in state)
    return state


class ComposerState:
    """The HybridLM decoding state used as generate's cache: the per-block states and the tokens read."""

    is_compileable = False

    def __init__(self, blocks, seen: int):
        self.blocks, self.seen = blocks, seen

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        self.blocks = _select_batch(self.blocks, beam_idx)


# the name generate passes the cache under: "cache" from transformers 5, "past_key_values" before
CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class ComposerForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ComposerConfig
    base_model_prefix = "composer"
    main_input_name = "input_ids"
    _no_split_modules = []

    def __init__(self, config):
        super().__init__(config)
        core = HybridLM(spec_from_data(config.architecture))
        for name, child in core.named_children():
            if name != "spec":
                self.add_module(name, child)
        self.spec = core.spec
        self._tied_weights_keys = {"head.weight": "embed.weight"} if core.spec.tie_embeddings else {}
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loading, held to the bundle: the weights come from model.safetensors only (never a
        pytorch_model.bin), and every tensor must be there and fit: none missing (it would stay random), none
        extra, none of another shape."""
        if kwargs.get("use_safetensors") is False:
            raise ValueError("a Composer bundle's weights are model.safetensors only (use_safetensors=False)")
        kwargs["use_safetensors"] = True
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                              **kwargs)
        problems = []
        for key, words in (("missing_keys", "missing"), ("unexpected_keys", "not in the model"),
                           ("mismatched_keys", "of another shape")):
            names = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(key) or ())
            if names:
                problems.append(f"{words}: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else ""))
        if info.get("error_msgs"):
            problems.append("; ".join(str(m) for m in info["error_msgs"]))
        if problems:
            raise ValueError(f"{pretrained_model_name_or_path}: model.safetensors does not match the architecture "
                             f"({'; '.join(problems)})")
        return (model, info) if want_info else model

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # the cache is a ComposerState, made by forward

    def _init_weights(self, module):
        pass  # HybridLM initialises its own weights; from_pretrained then loads the bundle's

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids=None, attention_mask=None, labels=None, cache=None, past_key_values=None,
                use_cache=None, return_dict=True, **kwargs):
        """With a ComposerState (or use_cache and no labels in eval mode): read input_ids after the state
        and return the advanced state; otherwise the plain full-sequence forward."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("Composer models read every token: padded batches (attention_mask with zeros) are not "
                             "supported; pass prompts of equal length, or one prompt at a time")
        state = cache if cache is not None else past_key_values
        use_cache = getattr(self.config, "use_cache", True) if use_cache is None else use_cache
        if not isinstance(state, ComposerState) and (not use_cache or labels is not None or self.training):
            logits, new_state = HybridLM.forward(self, input_ids).logits, None
        else:
            if not isinstance(state, ComposerState):
                state = ComposerState(HybridLM.init_state(self, input_ids.shape[0]), 0)
            logits, blocks, _ = HybridLM.forward(self, input_ids, state.blocks)
            new_state = ComposerState(blocks, state.seen + input_ids.shape[1])
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_ARG: new_state})

    def prepare_inputs_for_generation(self, input_ids, cache=None, past_key_values=None, use_cache=None,
                                      attention_mask=None, **kwargs):
        state = cache if cache is not None else past_key_values
        if isinstance(state, ComposerState):
            input_ids = input_ids[:, state.seen:]  # only the tokens the state has not read
        return {"input_ids": input_ids, CACHE_ARG: state, "use_cache": use_cache, "attention_mask": attention_mask}
'''


def auto_map() -> dict[str, Any]:
    return {"AutoConfig": "configuration_composer.ComposerConfig",
            "AutoModelForCausalLM": "modeling_composer.ComposerForCausalLM"}


def hf_files() -> dict[str, str]:
    """File name -> text of the wrapper files."""
    return {CONFIG_FILE: CONFIGURATION_SOURCE, MODEL_FILE: MODELING_SOURCE}
