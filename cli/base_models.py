"""`lco models ...`: the base models every team may train (the model registry), managed by
an operator on the database and the model store.

    lco models import SOURCE --name NAME [--dtype float32|bfloat16]
                                   a Hugging Face model dir or a GGUF file as a base model
    lco models list [--json]
    lco models remove NAME         unregister it and delete its files

Teams see these through `GET /v1/models`, beside their own fine-tuned models.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.options import DATA_DIR, JSON, open_database


def cmd_models_import(args: argparse.Namespace) -> int:
    from jobs.model_store import import_into_store

    # The converter loads torch and transformers when it runs: only in this command's process.
    from lco_core.model_import import ModelImportError, import_model

    db = open_database(args)
    # Our stages are the progress report: transformers' bars and load reports would bury them
    # (both read at its import, which the conversion does).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        row = import_into_store(
            db.sessions,
            db.settings,
            Path(args.source),
            args.name,
            importer=import_model,
            dtype=args.dtype,
            progress=lambda line: print(line, flush=True),
        )
    except (ModelImportError, OSError) as exc:
        # One line: a loader's message can span several.
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    print(
        f"imported {row.id}: {row.architecture}, {row.parameters:,} parameters "
        f"({row.dtype}, from {row.source_format})"
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from jobs.db import transaction
    from jobs.model_store import BUILTIN_MODELS, SYSTEM_OWNER, ModelStore, registered_models

    db = open_database(args)
    with transaction(db.sessions) as session:
        rows = registered_models(session)
    store = ModelStore(db.settings)
    models: list[dict[str, Any]] = [
        {"id": name, "created_at": created.isoformat(), "owned_by": SYSTEM_OWNER, "builtin": True}
        for name, created in BUILTIN_MODELS.items()
    ]
    models += [
        {
            "id": row.id,
            "created_at": row.created_at.isoformat(),
            "owned_by": row.owned_by,
            "builtin": False,
            "path": str(store.path_of(row)),
            "source": row.source,
            "source_format": row.source_format,
            "architecture": row.architecture,
            "model_type": row.model_type,
            "parameters": row.parameters,
            "dtype": row.dtype,
        }
        for row in rows
    ]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    for model in models:
        if model["builtin"]:
            print(f"{model['id']:<24} built in")
        else:
            print(
                f"{model['id']:<24} {model['architecture']}, {model['parameters']:,} parameters "
                f"({model['dtype']}, from {model['source_format']}), imported "
                f"{model['created_at'][:16].replace('T', ' ')}  {model['path']}"
            )
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    from jobs.model_store import remove_from_store

    db = open_database(args)
    try:
        remove_from_store(db.sessions, db.settings, args.name)
    except OSError as exc:  # after the row went: the files could not be deleted
        print(f"error: {args.name} is no longer registered, but: {exc}", file=sys.stderr)
        return 1
    print(f"removed base model {args.name}")
    return 0


def add_parsers(sub: Any) -> None:
    """`models ...`, on the top-level subparsers."""
    models = sub.add_parser("models", help="manage base models").add_subparsers(
        dest="action", required=True
    )
    p = models.add_parser(
        "import",
        parents=[DATA_DIR],
        help="a Hugging Face model dir or a GGUF file as a base model",
    )
    p.add_argument("source", help="a local Hugging Face model dir or .gguf file")
    p.add_argument("--name", required=True, help="what jobs call it (their `model`)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="of the weights a GGUF file is dequantized to (a dir's are copied as they are)",
    )
    p.set_defaults(func=cmd_models_import)
    p = models.add_parser(
        "list", parents=[DATA_DIR, JSON], help="the base models every team may train"
    )
    p.set_defaults(func=cmd_models_list)
    p = models.add_parser(
        "remove", parents=[DATA_DIR], help="unregister a base model and delete its files"
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_models_remove)
