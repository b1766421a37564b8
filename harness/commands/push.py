"""`bench push RUN --repo ID`: upload a run's checkpoint folder (weights, tokenizer, model card,
bench_checkpoint.json) to a Hugging Face Hub model repository.

Everything that can fail without uploading is checked first, each as one error line: the run,
its checkpoint and card, the repo id, offline mode, the token, then the hub itself (reachable,
and accepting the token) with a short timeout. The token comes from HF_TOKEN or the hub's token
file, goes out only in the Authorization header, and is masked out of every message.
"""
from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.backends.checkpoint import CHECKPOINT_FILE
from harness.credentials import mask
from harness.errors import BenchError

DEFAULT_ENDPOINT = "https://huggingface.co"
CHECK_TIMEOUT_S = 10.0  # for the reachability/auth check: a hub that does not answer in this is down for us


NAME = "push"


def add_parser(commands: Any) -> None:
    push = commands.add_parser(NAME, help="upload a run's checkpoint folder (with its model card) to the "
                               "Hugging Face Hub; token from HF_TOKEN or `hf auth login`")
    push.add_argument("run", help="run id (a folder name under results/runs)")
    push.add_argument("--repo", required=True, help="hub model repository, NAME or ORG/NAME (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--dry-run", action="store_true", help="list the files that would be uploaded; upload nothing")
    push.add_argument("--results", help="results folder; env BENCH_RESULTS; default ./results")


def run(args: argparse.Namespace) -> int:
    return push_command(args)


def push_command(args: argparse.Namespace) -> int:
    from harness.store import Store  # lazy: sqlite3 stays out of `bench --help`

    store = Store.existing(args.results)
    try:
        folder = checkpoint_folder(store, args.run)
    finally:
        store.close()
    check_repo_id(args.repo)
    files = files_to_upload(folder)
    if args.dry_run:
        print(f"would upload to {args.repo} ({'private' if args.private else 'public'}), from {folder}:")
        for path in files:
            print(f"  {path.relative_to(folder)}  {path.stat().st_size} bytes")
        return 0
    endpoint, token = hub_access()
    try:
        user = check_hub(endpoint, token)
        url = upload(endpoint, token, args.repo, folder, args.private, args.run)
    except BenchError as exc:
        raise BenchError(masked(str(exc), token)) from None
    print(masked(f"uploaded {len(files)} files from {folder} to {url} as {user}"
                 f"{' (private)' if args.private else ''}", token))
    return 0


def checkpoint_folder(store: Any, run_id: str) -> Path:
    from harness.report.model_card import CARD_FILE, is_bench_card  # lazy: sqlite3 stays out of `bench --help`

    run_dir = store.run_dir(run_id)
    if not run_dir.is_dir():
        raise BenchError(f"no run {run_id} in {store.root}/runs; see `bench report` for the runs there")
    folder = run_dir / "checkpoint"
    if not (folder / CHECKPOINT_FILE).is_file():
        raise BenchError(f"run {run_id} has no fine-tuned checkpoint ({folder}); finish it by re-running its "
                         "`bench run` command")
    if not is_bench_card(folder / CARD_FILE):  # absent, or peft's placeholder from save_pretrained
        raise BenchError(f"run {run_id} has no model card yet ({folder / CARD_FILE}): re-run its `bench run` "
                         "command (complete stages are skipped; the card is written at the end)")
    return folder


def files_to_upload(folder: Path) -> list[Path]:
    """The checkpoint's files, without hidden ones (an atomic write's temp file)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(folder).parts))


def check_repo_id(repo: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise BenchError(f"--repo {repo!r} is not a hub repo id ({str(exc).splitlines()[0]}); use NAME or "
                         "ORG/NAME") from None


def hub_access() -> tuple[str, str]:
    """The hub endpoint and token, read here rather than from huggingface_hub's import-time
    constants; offline mode and a missing token are errors before any request."""
    from huggingface_hub.constants import _is_true

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _is_true(os.environ.get(name)):
            raise BenchError(f"{name}={os.environ[name]} is set: bench push needs the Hugging Face Hub; unset it "
                             "(nothing was uploaded)")
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise BenchError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` (nothing was uploaded)")
    if any(ch.isspace() or not ch.isprintable() or not ch.isascii() for ch in token):
        raise BenchError("the Hugging Face token holds a space, a control or a non-ASCII character: check HF_TOKEN "
                         "or the hub's token file (nothing was uploaded)")
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"), token


def check_hub(endpoint: str, token: str) -> str:
    """The hub answers and accepts the token (whoami), within CHECK_TIMEOUT_S: the user's name."""
    request = urllib.request.Request(f"{endpoint}/api/whoami-v2", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_S) as reply:
            answer = json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise BenchError(f"the Hugging Face Hub at {endpoint} refused the token (HTTP {exc.code}): set a valid "
                             "write token in HF_TOKEN (nothing was uploaded)") from None
        raise BenchError(f"the Hugging Face Hub at {endpoint} answered HTTP {exc.code} to the token check; try "
                         "again later (nothing was uploaded)") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise BenchError(f"cannot reach the Hugging Face Hub at {endpoint} ({reason}): bench push needs network "
                         "access (nothing was uploaded)") from None
    return str(answer.get("name", "?")) if isinstance(answer, dict) else "?"


def upload(endpoint: str, token: str, repo: str, folder: Path, private: bool, run_id: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)
    try:
        made = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=folder, repo_id=repo, repo_type="model", ignore_patterns=[".*", "**/.*"],
                          commit_message=f"bench checkpoint of run {run_id}")
    except Exception as exc:  # the hub's HTTP errors, a dropped connection: one line, no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"upload to {endpoint}/{repo} failed: {first} (the repository may hold part of the "
                         "upload; re-run bench push to complete it)") from None
    return str(getattr(made, "url", f"{endpoint}/{repo}"))


def masked(text: str, token: str) -> str:
    return mask(text, token)

