"""Two logged-in annotators on a simulated Space, in a real Chromium: each is offered other
pairs in the Label tab, labels are saved under each one's login, and blind mode hides the other's
labels.

The Space is simulated as in tests/test_ui_publish.py (``SYSTEM=spaces``, ``SPACE_ID`` and
Gradio's OAuth variables, so the app shows a login button and Gradio reads the login from its
session cookie). Logging in would ask the Hub, the one thing faked here: each browser gets the
session cookie Gradio's login callback would have set for alice or bob.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from mmdemo.services import DEMO_COLLECTION
from mmdemo.settings import Settings

pytest_plugins = ["tests.browser"]

WAIT_MS = 30_000
OAUTH_SECRET = "simulated-space-secret"


@pytest.fixture
def app_settings(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The app as on a Space with ``hf_oauth: true`` (its variables set before it is built)."""
    from gradio import oauth

    monkeypatch.setenv("SYSTEM", "spaces")
    monkeypatch.setenv("SPACE_ID", "team/labeling")
    monkeypatch.setattr(oauth, "OAUTH_CLIENT_ID", "client")
    monkeypatch.setattr(oauth, "OAUTH_CLIENT_SECRET", OAUTH_SECRET)
    monkeypatch.setattr(oauth, "OAUTH_SCOPES", "openid profile")
    monkeypatch.setattr(oauth, "OPENID_PROVIDER_URL", "https://huggingface.co")
    # On a Space Gradio's server also starts a hot-reload watcher that needs the `spaces`
    # package (installed there, not here); the app does not use it.
    from gradio import http_server

    monkeypatch.setattr(http_server, "get_space", lambda: None)
    return app_settings.with_overrides(space_id="team/labeling")


def session_cookie(username: str, url: str) -> dict:
    """The cookie Gradio's OAuth callback sets for a logged-in ``username`` (Starlette's signed
    session, with the secret Gradio derives from the Space's OAuth secret)."""
    import itsdangerous

    info = {
        "access_token": f"token-of-{username}",
        "token_type": "bearer",
        "expires_in": 3600,
        "scope": "openid profile",
        "expires_at": int(time.time()) + 3600,
        "userinfo": {
            "sub": username,
            "name": username.title(),
            "preferred_username": username,
            "profile": f"https://huggingface.co/{username}",
            "picture": "",
        },
    }
    secret = hashlib.sha256((OAUTH_SECRET + "-v4").encode()).hexdigest()
    data = base64.b64encode(json.dumps({"oauth_info": info}).encode("utf-8"))
    value = itsdangerous.TimestampSigner(secret).sign(data).decode("utf-8")
    return {"name": "session", "value": value, "url": url}


def shown_pair(page) -> int:  # noqa: ANN001
    """The pair the Label tab shows (the list carries it)."""
    from playwright.sync_api import expect

    table = page.locator("#mm-label-list table.mm-candidates")
    expect(table).to_have_count(1, timeout=WAIT_MS)
    return int(table.get_attribute("data-pair"))


def open_label(page, url: str) -> int:  # noqa: ANN001
    page.goto(url)
    page.get_by_role("tab", name="Label", exact=True).click()
    from playwright.sync_api import expect

    expect(page.locator("#mm-label-candidates .thumbnail-item")).to_have_count(8, timeout=WAIT_MS)
    return shown_pair(page)


def idle(page) -> None:  # noqa: ANN001
    from playwright.sync_api import expect

    expect(page.locator("#mm-label .pending")).to_have_count(0, timeout=WAIT_MS)


@pytest.mark.browser
def test_two_annotators_get_different_pairs_and_blind_mode_hides_the_other(
    live_app, page, chromium, screenshot
):
    from playwright.sync_api import expect

    from tests.browser import ARTIFACTS_DIR

    store = live_app.services.store
    collection = store.collection(DEMO_COLLECTION)
    page.context.add_cookies([session_cookie("alice", live_app.url)])
    bob_context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    bob_context.add_cookies([session_cookie("bob", live_app.url)])
    bob = bob_context.new_page()
    bob.set_default_timeout(20_000)
    try:
        alices = open_label(page, live_app.url)
        bobs = open_label(bob, live_app.url)
        expect(page.locator("#mm-label-progress")).to_contain_text("labeling as alice")
        expect(bob.locator("#mm-label-progress")).to_contain_text("labeling as bob")
        assert alices != bobs  # alice has hers open: bob is offered another

        # alice marks the first candidate a hard negative, under her login.
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("n")
        message = page.locator("#mm-label-message")
        expect(message).to_contain_text("(by alice)", timeout=WAIT_MS)
        rows = page.locator("#mm-label-list tbody tr")
        expect(rows.nth(0)).to_contain_text("✗ hard negative")
        idle(page)
        screenshot("label-team-alice")
        [label] = store.labels_for_collection(collection.id)
        assert (label.pair_id, label.author, label.kind) == (alices, "alice", "negative")

        # bob skips on: never to alice's pair (labeled, and open for her).
        bob.locator("body").click(position={"x": 5, "y": 5})
        seen = {bobs}
        for _ in range(4):
            before = shown_pair(bob)
            bob.keyboard.press("s")
            expect(bob.locator("#mm-label-list table.mm-candidates")).not_to_have_attribute(
                "data-pair", str(before), timeout=WAIT_MS
            )
            seen.add(shown_pair(bob))
        assert alices not in seen and len(seen) == 5

        # bob opens alice's pair by its id, blind: her label is not shown ...
        bob.locator("#mm-label-blind input").check()
        idle(bob)
        bob.locator("#mm-label [placeholder='e.g. 12']").fill(str(alices))
        bob.keyboard.press("Enter")
        bob_list = bob.locator("#mm-label-list table.mm-candidates")
        expect(bob_list).to_have_attribute("data-pair", str(alices), timeout=WAIT_MS)
        idle(bob)
        expect(bob.locator("#mm-label-list tbody tr[data-label]")).to_have_count(0)
        bob_rows = bob.locator("#mm-label-list tbody tr")
        expect(bob_rows.nth(0)).not_to_contain_text("hard negative")
        bob.screenshot(path=str(ARTIFACTS_DIR / "label-team-bob-blind.png"), full_page=True)
        # ... and shows once blind mode is off.
        bob.locator("#mm-label-blind input").uncheck()
        expect(bob_rows.nth(0)).to_contain_text("✗ hard negative", timeout=WAIT_MS)
        idle(bob)
        bob.screenshot(path=str(ARTIFACTS_DIR / "label-team-bob-seeing.png"), full_page=True)
        # bob's own decision on it is saved beside alice's.
        bob.locator("body").click(position={"x": 5, "y": 5})
        bob.keyboard.press("1")
        bob.keyboard.press("c")
        expect(bob.locator("#mm-label-message")).to_contain_text("(by bob)", timeout=WAIT_MS)
        authors = {(lab.author, lab.kind) for lab in store.labels_for_pair(alices)}
        assert authors == {("alice", "negative"), ("bob", "also-positive")}
        # Shown again, the tab has the team's agreement: one candidate both decided.
        bob.get_by_role("tab", name="Curate", exact=True).click()
        bob.get_by_role("tab", name="Label", exact=True).click()
        idle(bob)
        bob.locator("#mm-label-team").get_by_text("Team agreement").click()
        agreement = bob.locator("#mm-label-agreement")
        expect(agreement).to_contain_text(
            "Cohen's κ = 0.00 on 1 candidate labeled", timeout=WAIT_MS
        )
        expect(agreement).to_contain_text("alice: 1 label on 1 pair")
        expect(agreement).to_contain_text("bob: 1 label on 1 pair")
        bob.screenshot(path=str(ARTIFACTS_DIR / "label-team-agreement.png"), full_page=True)
    finally:
        bob_context.close()
