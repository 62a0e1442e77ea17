"""The seed projects' environment variable names, read as a settings source of the configuration.

Deployments written for FastDeploy or the judge templates set BATCH_SIZE, MAX_SEQ_LEN and the like;
this table and the source reading it let those names keep working without the configuration's field
list knowing about them, and put them below TOKENMILL_* variables and explicit arguments.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

# Environment variable names of the seed projects (FastDeploy, the judge templates) -> field names.
SEED_ENV_ALIASES: dict[str, str] = {
    "MODEL_DIR": "model",
    "LOCAL_MODEL_PATH": "model",
    "MODEL_NAME": "served_model_name",
    "BATCH_SIZE": "max_num_seqs",
    "MAX_NEW_TOKENS": "default_max_tokens",
    "MAX_INPUT_LENGTH": "max_input_tokens",
    "MAX_SEQ_LEN": "max_input_tokens",
    "MAX_DEC_LEN": "max_dec_len",
    "MAX_CACHED_TASK_NUM": "max_queued_requests",
    "GPU_MEMORY_UTILIZATION": "gpu_memory_utilization",
    "BATCH_MODE": "batch_mode",
    "PUSH_MODE_HTTP_PORT": "port",
    "MP_NUM": "tensor_parallel_size",
}


class SeedAliasSource(PydanticBaseSettingsSource):
    """Reads the seeds' variable names; TOKENMILL_* variables and explicit arguments win over them."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for env_name, target in SEED_ENV_ALIASES.items():
            if target == field_name and env_name in os.environ:
                return os.environ[env_name], env_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[name] = value
        return values
