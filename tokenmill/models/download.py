"""Fetch a model at build time (never at run time), pinned to a revision, and verify that it loads."""

from __future__ import annotations

from pathlib import Path

from tokenmill.models.loader import check_model_directory

# what serving needs; other files (pickled weights, ONNX, GGUF copies) are not fetched
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]


def download(
    model_id: str, source: str, revision: str, directory: str | Path, endpoint: str | None = None
) -> Path:
    """Download into `directory` (resumable: files already there are kept) and check the result.

    `endpoint` overrides the hub's address (HF_ENDPOINT / MODELSCOPE_DOMAIN work too), e.g. a mirror."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if source == "huggingface":
        from huggingface_hub import snapshot_download

        snapshot_download(
            repo_id=model_id,
            revision=revision,
            local_dir=directory,
            allow_patterns=ALLOW_PATTERNS,
            endpoint=endpoint,
        )
    elif source == "modelscope":
        try:
            from modelscope import snapshot_download as modelscope_download
        except ImportError as exc:
            raise ValueError(
                "--source modelscope needs the modelscope package: pip install modelscope"
            ) from exc
        modelscope_download(
            model_id, revision=revision, local_dir=str(directory), allow_patterns=ALLOW_PATTERNS
        )
    else:
        raise ValueError(f"source must be modelscope or huggingface, got {source!r}")
    problems = check_model_directory(directory)
    if problems:
        raise ValueError(
            f"{model_id}@{revision} downloaded to {directory} but cannot be served: " + "; ".join(problems)
        )
    return directory
