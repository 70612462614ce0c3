"""``hf-decomp push``: upload an exported model folder (or only its indices) to the Hugging Face Hub."""

from __future__ import annotations

import argparse

from .common import HelpFormatter


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push",
        help="upload an exported model folder (or only its index sets) to the Hub",
        description="Upload a folder written by `hf-decomp export` to a Hub model repo through huggingface_hub "
                    "(the repo is created if needed). The local folder is not changed.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("dir", metavar="DIR", help="model folder (hf-decomp export) or analyze results folder")
    parser.add_argument("--repo-id", required=True, help="target repo, user/name")
    parser.add_argument("--private", action=argparse.BooleanOptionalAction, default=False, help="create the repo as private")
    parser.add_argument("--commit-message", default=None, help="commit message")
    parser.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    parser.add_argument("--indices-only", action="store_true",
                        help="upload only indices.json + indices.safetensors")
    parser.add_argument("--repo-type", default="model", choices=("model", "space"),
                        help="'space' uploads a folder written by `hf-decomp export --space` to a Gradio Space")
    parser.add_argument("--token", default=None, help="write token (not given: HF_TOKEN or `hf auth login`)")
    parser.add_argument("--endpoint", default=None, help="Hub URL (not given: HF_ENDPOINT or huggingface.co)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub.push import push_indices, push_to_hub
    from ..utils.errors import DecompValueError

    if args.indices_only and args.repo_type == "space":
        raise DecompValueError("--indices-only uploads index sets to a model repo; drop it or --repo-type space")
    kwargs = {} if args.indices_only else {"repo_type": args.repo_type}
    push = push_indices if args.indices_only else push_to_hub
    url = push(args.dir, args.repo_id, private=args.private, commit_message=args.commit_message,
               revision=args.revision, token=args.token, endpoint=args.endpoint, **kwargs)
    print(f"pushed {args.dir} to {args.repo_id}: {url}")
    return 0
