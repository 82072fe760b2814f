"""The standalone modeling.py reproduces Composer's logits and greedy generation in a Python without Composer.

All bundles are checked in one subprocess (`python -I -S` in an empty folder, with only torch's
site-packages on the path), parametrised over the primitive registry as it is at test time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import primitives
from composer import HybridLM, SpecError, load_spec
from composer.export import export

pytestmark = pytest.mark.slow  # one bundle per registered primitive, checked in a subprocess: ~20-40 s

PRIMITIVES = sorted(primitives.registered())
PROMPT_LEN, NEW_TOKENS = 37, 8  # 37: not a multiple of any chunk size

MALICIOUS_NAME = 'x"""\nopen("PWNED", "w").write("1")\n"""'
MALICIOUS_DESCRIPTION = "'''\n__import__('os').system('touch PWNED')\n# }}]])"

COMPOSITE = {
    "name": MALICIOUS_NAME,
    "description": MALICIOUS_DESCRIPTION,
    "d_model": 32, "vocab_size": 53, "tie_embeddings": False, "norm": "layernorm",
    "layers": [
        {"op": "attention", "name": "shared_attn", "window": 8},
        {"repeat": 2, "body": ["mlp"]},
        {"loop": {"times": 2, "body": ["attention", "mlp"], "inject": "concat", "iteration_embedding": True}},
        {"parallel": ["attention", "mlp"], "combine": "concat_proj"},
        {"share": "shared_attn", "adapter": {"kind": "lora", "rank": 4}},
        "mlp",
    ],
}

# The zoo's attention-side options and model options in one model (Hymba's meta tokens kept through a window,
# gpt-oss sinks, Qwen3-Next's gate with partial RoPE and QK-norm, MLA with low-rank queries and NoPE, ReLU^2).
ZOO_OPTIONS = {
    "d_model": 32, "vocab_size": 53, "meta_tokens": 4,
    "layers": [
        {"op": "attention", "n_heads": 4, "n_kv_heads": 2, "window": 6, "keep_prefix": 4, "sinks": True, "bias": True},
        {"op": "mlp", "kind": "relu2"},
        {"op": "attention", "n_heads": 2, "output_gate": "channel", "qk_norm": True, "rope_fraction": 0.25},
        {"op": "mla", "q_lora_rank": 8, "n_heads": 2},
        {"op": "attention", "output_gate": "head", "qkv_bias": True},
        {"op": "mla", "rope": False},
    ],
}

CHECK_SCRIPT = r'''
import importlib.util, json, os, sys
try:
    import composer  # noqa: F401
    composer_importable = True
except ImportError:
    composer_importable = False
import torch
torch.set_num_threads(int(os.environ["CHECK_THREADS"]))  # the parent's count: MoE routing is exact only then
results = {"composer_importable": composer_importable, "bundles": {}}
for name in sys.argv[1:]:
    folder = os.path.join(os.getcwd(), name)
    try:
        spec = importlib.util.spec_from_file_location("modeling_" + name, os.path.join(folder, "modeling.py"))
        modeling = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = modeling  # dataclasses look their module up there, as after an import
        spec.loader.exec_module(modeling)
        model = modeling.load_model(folder)
        expected, _ = modeling.read_safetensors(os.path.join(folder, "expected.safetensors"))
        with torch.no_grad():
            logits = model(expected["prompt"]).logits
        generated = model.generate(expected["prompt"][:1, :5], expected["generated"].shape[1] - 5, temperature=0)
        results["bundles"][name] = {
            "max_diff": (logits - expected["logits"]).abs().max().item(),
            "same_generation": torch.equal(generated, expected["generated"]),
            "arch_name": modeling.ARCHITECTURE.get("name"),
        }
    except Exception as e:
        results["bundles"][name] = {"error": f"{type(e).__name__}: {e}"}
print(json.dumps(results))
'''


def small_spec(name: str) -> dict:
    """The smallest valid model around one primitive (token mixers get an MLP after them)."""
    cls = primitives.registered()[name]
    layers = [name] if cls.kind == "channel_mixer" else [name, "mlp"]
    for d_model in (32, 64):
        data = {"d_model": d_model, "vocab_size": 61, "max_seq_len": 128, "layers": layers}
        try:
            load_spec(data)
            return data
        except SpecError:
            continue
    raise AssertionError(f"no small valid spec for {name}")


def isolated_python() -> list[str]:
    """A Python that sees torch but not Composer (no site: the editable install's .pth is not run)."""
    site = str(Path(torch.__file__).resolve().parent.parent)
    return [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.append({site!r}); exec(sys.stdin.read())"]


def run_check_script(root: Path, names: list[str], timeout: int) -> dict:
    """CHECK_SCRIPT run on the isolated Python over the bundles `names` in `root`; its JSON result."""
    script = root / "check.py"
    script.write_text(CHECK_SCRIPT)
    cmd = isolated_python()
    cmd[-1] = cmd[-1].replace("exec(sys.stdin.read())", f"exec(open({str(script)!r}).read())")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["CHECK_THREADS"] = str(torch.get_num_threads())
    proc = subprocess.run([*cmd, *names], cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def make_bundle(root: Path, name: str, spec_data: dict, seed: int) -> None:
    torch.manual_seed(seed)
    model = HybridLM(load_spec(spec_data)).eval()
    for p in model.parameters():  # move away from the init so norms and gates are not trivially 1 or 0
        p.data.add_(0.05 * torch.randn_like(p))
    export(model, root / name, progress=lambda *_: None)
    prompt = torch.randint(0, model.spec.vocab_size, (2, PROMPT_LEN))
    with torch.no_grad():
        logits = model(prompt).logits
    generated = model.generate(prompt[:1, :5], NEW_TOKENS, temperature=0)
    save_file({"prompt": prompt, "logits": logits.contiguous(), "generated": generated},
              str(root / name / "expected.safetensors"))


@pytest.fixture(scope="module")
def standalone_results(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bundles")
    names = []
    for i, name in enumerate(PRIMITIVES):
        make_bundle(root, name, small_spec(name), seed=i)
        names.append(name)
    make_bundle(root, "composite", COMPOSITE, seed=100)
    make_bundle(root, "zoo_options", ZOO_OPTIONS, seed=101)
    names += ["composite", "zoo_options"]
    results = run_check_script(root, names, timeout=300)
    results["root"] = root
    return results


def test_composer_is_not_importable_in_the_check(standalone_results):
    assert standalone_results["composer_importable"] is False


@pytest.mark.parametrize("name", PRIMITIVES)
def test_standalone_matches_composer(standalone_results, name):
    result = standalone_results["bundles"][name]
    assert "error" not in result, result.get("error")
    assert result["max_diff"] < 1e-5
    assert result["same_generation"]


def test_composite_spec_and_no_code_injection(standalone_results):
    result = standalone_results["bundles"]["composite"]
    assert "error" not in result, result.get("error")
    assert result["max_diff"] < 1e-5 and result["same_generation"]
    assert result["arch_name"] == MALICIOUS_NAME  # the name travelled as data ...
    assert not (standalone_results["root"] / "PWNED").exists()  # ... and never ran as code
    source = (standalone_results["root"] / "composite" / "modeling.py").read_text()
    assert "PWNED\", \"w\")\n" not in source and "\nopen(" not in source


def test_zoo_options_run_standalone(standalone_results):
    result = standalone_results["bundles"]["zoo_options"]
    assert "error" not in result, result.get("error")
    assert result["max_diff"] < 1e-5 and result["same_generation"]


def test_modeling_py_imports_only_torch_and_stdlib(standalone_results):
    import ast

    source = (standalone_results["root"] / "composite" / "modeling.py").read_text()
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"torch", "__future__", *sys.stdlib_module_names}, roots
    assert "import triton" not in source and "safetensors" not in roots
