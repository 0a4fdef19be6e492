"""Command line: ``python -m mmdemo COMMAND``.

Every command calls the same domain functions as the web UI. Progress goes to stderr; the last
line on stdout is one JSON object (or list) for scripts. A failure exits non-zero with a one-line
reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mmdemo.settings import Settings

BASE_MODEL_HELP = "auto, tiny (tiny-clip), tiny-siglip, tiny-siglip2, a Hub id or a local path"


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
    from mmdemo.data.store import Store

    settings.ensure_dirs()
    return Store(settings.db_path, settings.max_caption_chars)


def _ensure_named_demo(settings: Settings, args: argparse.Namespace) -> None:
    """Build the demo collection first when a command names it, as the app does on start.

    Every command with ``--collection`` gets this, so the README's examples work on a fresh
    home. Concurrent processes (``torchrun`` ranks) are safe: the build holds a file lock.
    """
    from mmdemo.data.demo import DEMO_COLLECTION, ensure_demo_collection

    name = getattr(args, "collection", None)
    if not isinstance(name, str) or name.strip() != DEMO_COLLECTION:
        return
    store = _open_store(settings)
    try:
        if store.find_collection(DEMO_COLLECTION) is None:
            print(f"demo: creating {DEMO_COLLECTION!r} (first use)", file=sys.stderr, flush=True)
        ensure_demo_collection(store, settings, progress=_progress_printer("demo"))
    finally:
        store.close()


# -- commands ------------------------------------------------------------------------------
def cmd_serve(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.services import Services
    from mmdemo.ui.app import launch

    services = Services.create(settings, sync=True)  # restores an empty home from MMDEMO_SYNC_TO
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
    from mmdemo.data.importers import import_source

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
    from mmdemo.data.export import export_collection

    store = _open_store(settings)
    try:
        summary = export_collection(
            store, settings, args.collection, Path(args.out), progress=_progress_printer("export")
        )
        return summary.as_json() if hasattr(summary, "as_json") else summary
    finally:
        store.close()


def cmd_split(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.data.splits import make_splits

    store = _open_store(settings)
    try:
        collection = store.collection(args.collection)
        change = make_splits(
            store, collection.id, eval_share=args.eval, test_share=args.test, seed=args.seed
        )
        print(f"split {collection.name}: {change.summary()}", file=sys.stderr)
        return {"collection": collection.name, **change.as_json()}
    finally:
        store.close()


def cmd_push(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.hub.publish import push_command

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


class _StderrBoard:
    """A progress board (like :class:`~mmdemo.training.board.ProgressBoard`) printing to stderr."""

    def __init__(self) -> None:
        self._last: tuple = ()

    def update(self, **fields: object) -> None:
        if "message" in fields and fields.get("message"):
            print(f"train: {fields['message']}", file=sys.stderr, flush=True)
        step, total = fields.get("step"), fields.get("total_steps")
        if step is not None and (step, total) != self._last:
            self._last = (step, total)
            eta = fields.get("eta_s")
            rate = fields.get("samples_per_s")
            print(
                f"train: step {step}/{total} epoch {fields.get('epoch')}"
                f" {rate} samples/s eta {eta}s",
                file=sys.stderr,
                flush=True,
            )

    def append(self, key: str, item: object, max_len: int = 5000) -> None:
        if key == "loss_history" and isinstance(item, dict):
            print(f"train: step {item.get('step')} loss {item.get('loss'):.4f}", file=sys.stderr)


def cmd_train(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.retrieval.models import resolve_base_model
    from mmdemo.training.run import default_config, run_training

    if args.start_from and args.base_model:
        raise CliError("--start-from continues a run on its own base model: drop --base-model.")
    choice = resolve_base_model(
        settings.with_overrides(base_model=args.base_model) if args.base_model else settings
    )
    defaults = default_config(choice.is_tiny)
    config = dataclasses.replace(
        defaults,
        epochs=args.epochs if args.epochs is not None else defaults.epochs,
        max_minutes=args.max_minutes if args.max_minutes is not None else defaults.max_minutes,
        batch_size=args.batch_size or defaults.batch_size,
        lr=args.lr or defaults.lr,
        loss=args.loss or defaults.loss,
        seed=args.seed if args.seed is not None else defaults.seed,
        use_hard_negatives=(
            defaults.use_hard_negatives if args.hard_negatives is None else args.hard_negatives
        ),
    )
    store = _open_store(settings)
    try:
        result = run_training(
            store,
            settings,
            args.collection,
            config,
            run_name=args.run,
            base_model=choice.spec,
            status_sink=_StderrBoard(),
            start_from=args.start_from,
        )
    finally:
        store.close()
    if result.status == "failed":
        raise CliError(result.message or "training failed")
    return {
        "run": result.name,
        "run_dir": str(result.path),
        "model_dir": str(result.model_path),
        "status": result.status,
        "steps": result.steps,
        "train_seconds": round(result.train_seconds, 2),
        "stop_reason": result.stop_reason,
        "metrics": result.metrics,
        "start_from": args.start_from,
    }


def _services(settings: Settings):
    from mmdemo.services import Services

    # Read-only commands: a run the app (or another CLI) is training must not be marked interrupted.
    return Services.create(settings, demo=False, recover_runs=False)


def cmd_eval(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.retrieval.compare import resolve_model
    from mmdemo.retrieval.evaluation import evaluate_model

    services = _services(settings)
    try:
        collection = services.store.collection(args.collection)
        ref = resolve_model(services.store, services.model, args.model)
        model = services.models.get(ref.spec)
        metrics = evaluate_model(model, services.store, settings, collection.id, split=args.split)
        return {
            "collection": collection.name,
            "model": ref.as_json(),
            "split": args.split,
            **metrics,
        }
    finally:
        services.close()


def cmd_search(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.retrieval.compare import search_command

    services = _services(settings)
    try:
        return search_command(services, args.collection, args.model, args.query, k=args.k)
    finally:
        services.close()


def cmd_compare(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.retrieval.compare import compare_command

    services = _services(settings)
    try:
        return compare_command(services, args.collection, args.run, split=args.split)
    finally:
        services.close()


def cmd_check(settings: Settings, args: argparse.Namespace) -> object:
    from mmdemo.retrieval.checks import CheckOptions, check_collection, fix_leakage

    options = CheckOptions(min_side=args.min_side, use_embeddings=not args.hashes_only)
    services = _services(settings)
    try:
        report = check_collection(
            services, args.collection, args.model, options, progress=_progress_printer("check")
        )
        print(f"check {report.collection}: {report.summary()}", file=sys.stderr)
        result = report.as_json()
        if args.fix_leakage:
            change = fix_leakage(services.store, report.collection_id, report.leaks)
            print(f"check: moved {change.changed} pairs: {change.counts_text()}", file=sys.stderr)
            result["fixed"] = change.as_json()
        return result
    finally:
        services.close()


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], object]] = {
    "serve": cmd_serve,
    "collections": cmd_collections,
    "import": cmd_import,
    "export": cmd_export,
    "split": cmd_split,
    "push": cmd_push,
    "train": cmd_train,
    "eval": cmd_eval,
    "search": cmd_search,
    "compare": cmd_compare,
    "check": cmd_check,
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
    serve.add_argument("--base-model", help=BASE_MODEL_HELP)

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

    split = sub.add_parser(
        "split",
        help="random eval/test shares; identical captions or images stay in one split",
    )
    split.add_argument("--collection", required=True)
    split.add_argument(
        "--eval", type=float, default=0.1, help="share of the pairs for eval (default 0.1)"
    )
    split.add_argument("--test", type=float, default=0.0, help="share for test (default 0)")
    split.add_argument("--seed", type=int, default=0)

    push = sub.add_parser("push", help="publish a run's model and/or a collection to the Hub")
    push.add_argument("--run", help="run whose model to publish")
    push.add_argument("--repo", help="model repo USER/NAME")
    push.add_argument("--dataset-repo", help="dataset repo USER/NAME for the collection")
    push.add_argument("--collection", help="collection to publish (default: the run's)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--dry-run", metavar="DIR", help="write the files to DIR; no network")
    push.add_argument("--if-exists", choices=["ask", "overwrite", "pr"], default="ask")

    train = sub.add_parser("train", help="finetune the base model on a collection")
    train.add_argument("--collection", required=True)
    train.add_argument("--base-model", help=BASE_MODEL_HELP)
    train.add_argument("--epochs", type=float)
    train.add_argument("--max-minutes", type=float, help="time budget of the training loop")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--loss", choices=["mnrl", "symmetric", "cached", "cached-symmetric", "sigmoid"]
    )
    train.add_argument(
        "--hard-negatives",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train with the hand-labeled hard negatives (default: yes)",
    )
    train.add_argument("--run", help="run name (default: <collection>-<n>)")
    train.add_argument(
        "--start-from",
        metavar="RUN",
        help="continue from this finished run's model instead of the base model",
    )

    evaluate = sub.add_parser("eval", help="retrieval metrics of a model on a collection")
    evaluate.add_argument("--collection", required=True)
    evaluate.add_argument("--model", default="base", help="base, a run name or a model folder")
    evaluate.add_argument("--split", default="eval")

    search = sub.add_parser("search", help="top-k pairs for a text query")
    search.add_argument("--collection", required=True)
    search.add_argument("--model", default="base", help="base, a run name or a model folder")
    search.add_argument("--query", required=True)
    search.add_argument("-k", type=int, default=10)

    compare = sub.add_parser("compare", help="per-query ranks of a run against the base model")
    compare.add_argument("--collection", required=True)
    compare.add_argument("--run", required=True)
    compare.add_argument("--split", default="eval")

    check = sub.add_parser(
        "check", help="duplicates, leakage between splits, odd captions and images"
    )
    check.add_argument("--collection", required=True)
    check.add_argument("--model", default="base", help="base, a run name or a model folder")
    check.add_argument(
        "--hashes-only", action="store_true", help="no model: hashes and pixels only"
    )
    check.add_argument(
        "--min-side", type=int, default=64, help="report images smaller than this (px)"
    )
    check.add_argument(
        "--fix-leakage",
        action="store_true",
        help="move each duplicate group that spans train and eval/test into one split",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env().with_overrides(
            home=args.home,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            base_model=getattr(args, "base_model", None) if args.command == "serve" else None,
        )
        _ensure_named_demo(settings, args)
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
