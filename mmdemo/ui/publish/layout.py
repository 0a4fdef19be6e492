"""The Publish tab: a finished run's model and a collection as Hub repos, or a dry-run zip.

The layout and the wiring live here; the handlers (plain functions, tested directly) live in
:mod:`mmdemo.ui.publish.handlers`, the form's choices, checks and messages in
:mod:`mmdemo.ui.publish.view`. Gradio fills the ``gr.OAuthToken`` / ``gr.OAuthProfile``
arguments of the click handlers below from the Space login; the token goes from the click
straight to the publisher and is never stored.
"""

from __future__ import annotations

import gradio as gr

from mmdemo.hub.publish import on_space
from mmdemo.services import Services
from mmdemo.ui.common import Shared
from mmdemo.ui.identity import NO_SPACE_LOGIN, space_login_available, token_hint
from mmdemo.ui.publish.handlers import dry_run, import_from_hub, push
from mmdemo.ui.publish.view import (
    EMPTY_FORM,
    IF_EXISTS_CHOICES,
    cancel_choice,
    follow_run,
    form_changed,
    refresh_choices,
)

INTRO = (
    "Publish a finished run's model and/or a collection (pairs, hard-negative triplets, images) to"
    " the Hugging Face Hub, with cards that hold the before/after metrics. Fill a repo box to"
    " publish that part. **Dry run** writes exactly the files a push would upload and gives"
    " them to you as a zip; nothing is sent."
)


def build_publish(services: Services, shared: Shared) -> None:
    """Lay out the Publish tab inside the current ``gr.Tab`` and wire its events."""
    settings = services.settings
    space = on_space(settings)

    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        with gr.Column():
            run = gr.Dropdown(
                label="Finished run",
                info="The model of this run is published.",
                elem_id="mm-pub-run",
                choices=[],
                value=None,
            )
            model_repo = gr.Textbox(
                label="Model repo",
                placeholder="your-name/my-clip",
                info="owner/name on the Hub; leave empty to publish only the dataset.",
                elem_id="mm-pub-model-repo",
            )
        with gr.Column():
            collection = gr.Dropdown(
                label="Collection",
                info="Published as a dataset: pairs (images embedded), plus triplets and"
                " also_positive once labeled.",
                elem_id="mm-pub-collection",
                choices=[],
                value=None,
            )
            dataset_repo = gr.Textbox(
                label="Dataset repo",
                placeholder="your-name/my-pairs",
                info="owner/name on the Hub; leave empty to publish only the model.",
                elem_id="mm-pub-dataset-repo",
            )
    # Choices come from the store at page load, never from build time: a name baked into the
    # page goes stale (renamed or deleted collection) and Gradio then refuses the event.
    seen = gr.State(None)
    check = gr.Markdown(EMPTY_FORM, elem_id="mm-pub-check")

    with gr.Row():
        private = gr.Checkbox(
            value=True,
            label="Private repos",
            info="Applies to repos created now.",
            scale=1,
            min_width=160,
        )
        with gr.Column(scale=3):
            if space_login_available(settings):
                gr.LoginButton()
            elif space:
                gr.Markdown(NO_SPACE_LOGIN)
            token = gr.Textbox(
                label="Hugging Face token (write access)",
                type="password",
                placeholder="hf_…  (optional when HF_TOKEN or a saved login exists)",
                visible=not space,
                elem_id="mm-pub-token",
            )
            gr.Markdown(token_hint(settings), elem_id="mm-pub-identity")

    with gr.Row():
        dry_btn = gr.Button("Dry run → zip", elem_id="mm-pub-dry")
        push_btn = gr.Button("Push to the Hub", variant="primary", elem_id="mm-pub-push")
    with gr.Group(visible=False, elem_id="mm-pub-ask") as ask:
        if_exists = gr.Radio(
            IF_EXISTS_CHOICES, value="pr", label="The repo already exists", elem_id="mm-pub-mode"
        )
        with gr.Row():
            continue_btn = gr.Button("Continue", variant="primary", elem_id="mm-pub-continue")
            cancel_btn = gr.Button("Cancel")
    status = gr.Markdown(elem_id="mm-pub-status")
    download = gr.DownloadButton(
        "Download the dry run (.zip)", visible=False, elem_id="mm-pub-download"
    )
    preview = gr.Markdown(
        visible=False,
        container=True,
        max_height=640,
        label="Model card preview",
        elem_id="mm-pub-preview",
    )

    with gr.Accordion("Import a collection from a Hub dataset repo", open=False, elem_id="mm-pull"):
        gr.Markdown(
            "Bring a published collection back: its pairs, splits and hand-labeled negatives."
            " On a Space the disk is wiped at every restart, so the dataset repo is the durable"
            " copy of your labels."
        )
        with gr.Row(equal_height=True):
            pull_repo = gr.Textbox(label="Dataset repo", placeholder="owner/name", scale=2)
            pull_name = gr.Textbox(
                label="Into collection", placeholder="defaults to the repo's name", scale=2
            )
            pull_btn = gr.Button("Import", scale=1, elem_id="mm-pull-btn")
        pull_status = gr.Markdown(elem_id="mm-pull-status")

    # -- wiring ------------------------------------------------------------------------------
    form = [run, model_repo, collection, dataset_repo]
    outcome = [status, ask, download, preview]

    def on_refresh(
        run_name: str | None, coll: str | None, last: tuple | None, current: str | None
    ) -> tuple:
        return tuple(refresh_choices(services, run_name, coll, last, current))

    # The browser's current collection is read when the page loads and whenever the tab is
    # shown (runs finished and collections made elsewhere show then); it is never written here.
    quiet = {"show_progress": "hidden"}
    choices_in = [run, collection, seen, shared.collection]
    choices_out = [run, collection, seen]
    shared.demo.load(on_refresh, choices_in, choices_out, **quiet)
    if "publish" in shared.tabs:
        shared.tabs["publish"].select(on_refresh, choices_in, choices_out, **quiet)
    run.input(lambda name: follow_run(services, name), [run], [collection], **quiet)
    # One listener for the whole form, so checks finish in order and the last one shows; a
    # change also clears what the last dry run or push said about other targets.
    gr.on(
        [control.change for control in form],
        lambda *values: tuple(form_changed(services, *values)),
        form,
        [check, *outcome],
        trigger_mode="always_last",
        **quiet,
    )

    def on_dry_run(
        run_name: str | None,
        model: str | None,
        coll: str | None,
        data: str | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        return tuple(dry_run(services, run_name, model, coll, data, progress=progress))

    def on_push(
        run_name: str | None,
        model: str | None,
        coll: str | None,
        data: str | None,
        private_repos: bool,
        pasted: str | None,
        oauth_token: gr.OAuthToken | None,
        profile: gr.OAuthProfile | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        return tuple(
            push(
                services,
                run_name,
                model,
                coll,
                data,
                private_repos,
                "ask",
                pasted,
                oauth_token,
                profile,
                progress=progress,
            )
        )

    def on_continue(
        run_name: str | None,
        model: str | None,
        coll: str | None,
        data: str | None,
        private_repos: bool,
        mode: str,
        pasted: str | None,
        oauth_token: gr.OAuthToken | None,
        profile: gr.OAuthProfile | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        return tuple(
            push(
                services,
                run_name,
                model,
                coll,
                data,
                private_repos,
                mode,
                pasted,
                oauth_token,
                profile,
                progress=progress,
            )
        )

    def on_pull(
        repo: str | None,
        name: str | None,
        pasted: str | None,
        oauth_token: gr.OAuthToken | None,
        profile: gr.OAuthProfile | None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple:
        return tuple(
            import_from_hub(services, repo, name, pasted, oauth_token, profile, progress=progress)
        )

    publish_events = {
        "concurrency_id": "publish",
        "concurrency_limit": 1,
        "show_progress_on": [status],  # one bar, on the message that changes
    }
    dry_btn.click(on_dry_run, form, outcome, **publish_events)
    push_btn.click(on_push, [*form, private, token], outcome, **publish_events)
    continue_btn.click(on_continue, [*form, private, if_exists, token], outcome, **publish_events)
    cancel_btn.click(lambda: tuple(cancel_choice()), None, outcome, **quiet)
    pull_btn.click(
        on_pull,
        [pull_repo, pull_name, token],
        [pull_status, collection],
        concurrency_id="import",
        show_progress_on=[pull_status],
    )
