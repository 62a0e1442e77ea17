"""Random PEFT LoRA adapters for the tiny models, written by `peft` itself, and peft's greedy outputs."""

from __future__ import annotations

from pathlib import Path

import torch

# peft and transformers are imported inside the functions that use them: test modules import this
# one at collection time, and importing peft there costs every pytest run half a second.

ALL_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_adapter(
    base_dir: Path,
    directory: Path,
    seed: int,
    rank: int = 8,
    alpha: int = 16,
    targets: list[str] | None = None,
    use_rslora: bool = False,
) -> Path:
    """An adapter whose A and B are both random (peft's `init_lora_weights=False`), so it changes the
    model's greedy output; the base model is loaded fresh each time, as peft modifies it in place."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets or ALL_TARGETS,
        init_lora_weights=False,
        use_rslora=use_rslora,
    )
    get_peft_model(base, config).save_pretrained(directory)
    return directory


def peft_model(base_dir: Path, adapter_dir: Path | None) -> torch.nn.Module:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    return base if adapter_dir is None else PeftModel.from_pretrained(base, adapter_dir).eval()


@torch.no_grad()
def peft_greedy(
    base_dir: Path, adapter_dir: Path | None, prompts: list[list[int]], max_tokens: int
) -> list[list[int]]:
    """transformers + peft greedy continuations of each prompt (None: the base model alone)."""
    model = peft_model(base_dir, adapter_dir)
    outputs = []
    for prompt in prompts:
        ids = torch.tensor([prompt])
        out = model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
            pad_token_id=0,
        )  # fmt: skip
        outputs.append(out[0, len(prompt) :].tolist())
    return outputs
