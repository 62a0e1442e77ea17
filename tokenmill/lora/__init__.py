"""LoRA adapters served on a base model without merging (issue 16): PEFT directories, resident slots,
the per-step token -> adapter mapping, and the projection wrappers that apply them."""
