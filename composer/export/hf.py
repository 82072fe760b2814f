"""Hugging Face wrapper files for a bundle, so that where `transformers` is installed

    AutoModelForCausalLM.from_pretrained(bundle_dir, trust_remote_code=True)

builds the model from `modeling.py` (the standalone source) and loads `model.safetensors`. The files are
fixed text (nothing from the spec is written into them); the architecture travels in `config.json`.

The wrapper owns the HybridLM's sub-modules directly (`embed`, `blocks`, `final_norm`, `head`), so the
weight names are the bundle's. Generation goes through transformers' `generate` without a cache: each
step re-reads the whole sequence (correct, not fast); `modeling.load_model().generate` streams the state.
"""

from __future__ import annotations

from typing import Any

CONFIG_FILE = "configuration_composer.py"
MODEL_FILE = "modeling_composer.py"

CONFIGURATION_SOURCE = '''"""Hugging Face config of a model exported by Composer (its `architecture` field)."""

from transformers import PretrainedConfig


class ComposerConfig(PretrainedConfig):
    model_type = "composer"

    def __init__(self, architecture=None, tie_word_embeddings=True, **kwargs):
        self.architecture = architecture or {}
        self.vocab_size = self.architecture.get("vocab_size", 256)
        self.hidden_size = self.architecture.get("d_model", 0)
        kwargs.setdefault("use_cache", False)  # the wrapper re-reads the sequence; no transformers cache
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
'''

MODELING_SOURCE = '''"""Hugging Face causal-LM wrapper of the standalone Composer model in modeling.py."""

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_composer import ComposerConfig
from .modeling import HybridLM, spec_from_data


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
        self.registry = core.registry  # the blocks' shared state (auxiliary losses), not a module
        self._tied_weights_keys = {"head.weight": "embed.weight"} if core.spec.tie_embeddings else {}
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls):
        return False  # no transformers Cache: each generation step re-reads the whole sequence

    def _init_weights(self, module):
        pass  # HybridLM initialises its own weights; from_pretrained then loads the bundle's

    def get_input_embeddings(self):
        return self.embed

    def set_input_embeddings(self, value):
        self.embed = value

    def get_output_embeddings(self):
        return self.head

    def forward(self, input_ids=None, attention_mask=None, labels=None, return_dict=True, **kwargs):
        logits = HybridLM.forward(self, input_ids)
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}
'''


def auto_map() -> dict[str, Any]:
    return {"AutoConfig": "configuration_composer.ComposerConfig",
            "AutoModelForCausalLM": "modeling_composer.ComposerForCausalLM"}


def hf_files() -> dict[str, str]:
    """File name -> text of the wrapper files."""
    return {CONFIG_FILE: CONFIGURATION_SOURCE, MODEL_FILE: MODELING_SOURCE}
