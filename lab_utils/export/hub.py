"""Uploading an exported folder to the Hugging Face hub (dry run by default).
"""

import os
from pathlib import Path
from lab_utils.export.merge import ExportError


# Hugging Face Hub
def folder_files(folder) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every file under `folder`, sorted."""
    folder = Path(folder)
    return sorted((str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def push_to_hub(folder, repo_id: str, token_env: str = "HF_TOKEN", dry_run: bool = True,
                private: bool = True) -> list[tuple[str, int]]:
    """Upload `folder` to a hub model repo with huggingface_hub.upload_folder.

    The token is read from the environment variable `token_env` and handed straight to
    the client: never printed, logged or written. A dry run only lists what would go up.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"nothing to push: '{folder}' is not a folder")
    files = folder_files(folder)
    if dry_run:
        return files
    token = os.environ.get(token_env)
    if not token:
        raise ExportError(f"push_to_hub needs a token in ${token_env} "
                          "(a write token from huggingface.co/settings/tokens)")
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                      commit_message="Upload from finetune-lab export")
    return files
