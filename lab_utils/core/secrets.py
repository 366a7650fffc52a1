"""Credentials: which environment variables and fields hold one, and masking them.

The lab reads tokens from the environment only (HF_TOKEN for a hub upload, the trackers'
own keys), hands them straight to the client that needs them, and never writes one
into params.json, a log, a report or an executed notebook, nor prints one.
"""

import os
import re

# the tokens the lab and its libraries read from the environment
SECRET_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "SWANLAB_API_KEY",
                    "MODELSCOPE_API_TOKEN", "LAB_API_KEY")
SECRET_NAME = re.compile(r"(^|_)(token|api_key|apikey|secret|password|passwd)$", re.IGNORECASE)
REDACTED = "***"


def is_secret_name(name: str) -> bool:
    """HF_TOKEN, api_key, hub_token, ...: a variable or field that holds a credential (max_new_tokens is not)."""
    return name.upper() in SECRET_VARIABLES or bool(SECRET_NAME.search(name))


def redact(values: dict) -> dict:
    """`values` with every credential masked: fields with a secret's name, and any string equal to the
    value of a secret environment variable (a token pasted into a config)."""
    secrets = {os.environ[v] for v in SECRET_VARIABLES if os.environ.get(v)}
    return {k: REDACTED if isinstance(v, str) and v and (is_secret_name(k) or v in secrets) else v
            for k, v in values.items()}
