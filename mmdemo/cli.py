"""Command line: ``python -m mmdemo COMMAND``.

Every command calls the same domain functions as the web UI. Progress goes to stderr; the last
line on stdout is one JSON object (or list) for scripts. A failure exits non-zero with a one-line
reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mmdemo.settings import Settings


class CliError(Exception):
    """A failure to report as one line on stderr."""


def _emit(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def _progress_printer(label: str) -> Callable[[int, int | None, str], None]:
    """A progress callback writing a carriage-return status line to stderr."""
    interactive = sys.stderr.isatty()

    def report(done: int, total: int | None, message: str = "") -> None:
        if not interactive and total and done not in (total,) and done % 50:
            return
        of = f"/{total}" if total else ""
        end = "\r" if interactive else "\n"
        print(f"{label}: {done}{of} {message}".rstrip(), end=end, file=sys.stderr, flush=True)

    return report


def _open_store(settings: Settings):
    from mmdemo.store import Store

    settings.ensure_dirs()
    return Store(settings.db_path)


# -- commands ------------------------------------------------------------------------------
def cmd_serve(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.services import Services
    from mmdemo.ui.app import launch

    services = Services.create(settings)
    launch(services)
    return {"served": f"http://{settings.host}:{settings.port}"}


def cmd_collections(settings: Settings, args: argparse.Namespace) -> object:
    store = _open_store(settings)
    try:
        result = []
        for c in store.list_collections():
            stats = store.collection_stats(c.id)
            result.append(
                {
                    "name": c.name,
                    "pairs": stats.pairs,
                    "splits": stats.splits,
                    "negatives": stats.negatives,
                    "also_positives": stats.also_positives,
                }
            )
        for row in result:
            print(
                f"{row['name']}: {row['pairs']} pairs, {row['negatives']} negatives",
                file=sys.stderr,
            )
        return {"collections": result}
    finally:
        store.close()


def cmd_import(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.importers import import_source

    store = _open_store(settings)
    try:
        report = import_source(
            store,
            settings,
            args.collection,
            args.source,
            caption_column=args.caption_column,
            image_column=args.image_column,
            split=args.split,
            author=args.author,
            progress=_progress_printer("import"),
        )
        print(report.summary(), file=sys.stderr)
        return {
            "added": report.added,
            "duplicates": report.duplicates,
            "rejected": [{"item": r.item, "reason": r.reason} for r in report.rejected],
            "negatives_added": report.negatives_added,
        }
    finally:
        store.close()


def cmd_export(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.export import export_collection

    store = _open_store(settings)
    try:
        summary = export_collection(
            store, settings, args.collection, Path(args.out), progress=_progress_printer("export")
        )
        return summary.as_json() if hasattr(summary, "as_json") else summary
    finally:
        store.close()


def cmd_push(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.hub import push_command

    return push_command(
        settings,
        args.run,
        args.repo,
        dataset_repo=args.dataset_repo,
        collection=args.collection,
        private=args.private,
        dry_run_dir=args.dry_run,
        if_exists=args.if_exists,
        progress=_progress_printer("push"),
    )


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], object]] = {
    "serve": cmd_serve,
    "collections": cmd_collections,
    "import": cmd_import,
    "export": cmd_export,
    "push": cmd_push,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmdemo",
        description="Curate text–image pairs, label hard negatives, finetune and compare models.",
    )
    parser.add_argument("--home", help="runtime folder (overrides MMDEMO_HOME)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the web app")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--base-model", help="auto, tiny, a Hub id or a local path")

    sub.add_parser("collections", help="list collections with counts")

    imp = sub.add_parser("import", help="import a folder, zip, CSV/JSONL or Hugging Face dataset")
    imp.add_argument("source", help="path, or a Hub dataset id owner/name")
    imp.add_argument("--collection", required=True)
    imp.add_argument("--caption-column")
    imp.add_argument("--image-column")
    imp.add_argument("--split", help="put everything in this split (train, eval or test)")
    imp.add_argument("--author", default=os.environ.get("USER"))

    exp = sub.add_parser("export", help="write a collection as a Hub dataset folder")
    exp.add_argument("--collection", required=True)
    exp.add_argument("--out", required=True)

    push = sub.add_parser("push", help="publish a run's model and/or a collection to the Hub")
    push.add_argument("--run", help="run whose model to publish")
    push.add_argument("--repo", help="model repo USER/NAME")
    push.add_argument("--dataset-repo", help="dataset repo USER/NAME for the collection")
    push.add_argument("--collection", help="collection to publish (default: the run's)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", metavar="DIR", help="write the files to DIR; no network")
    push.add_argument("--if-exists", choices=["ask", "overwrite", "pr"], default="ask")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(
            home=args.home,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            base_model=getattr(args, "base_model", None),
        )
        result = COMMANDS[args.command](settings, args)
    except KeyboardInterrupt:
        print("mmdemo: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is a one-line reason
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"mmdemo {args.command}: {reason}", file=sys.stderr)
        return 1
    _emit(result)
    return 0
