"""User text, in and out: the one validation of captions and names, and the one escaping helper.

Every write path (import, the Curate editor, caption negatives, renames, Hub import) cleans text
with :func:`clean_caption` / :func:`clean_name`, so the same limits and messages apply
everywhere. Every piece of user text that reaches Markdown or HTML (captions, collection and run
names, authors, file names, error messages) goes through :func:`md` or :func:`html_text`, so it
stays text: ``<img src=x onerror=…>`` shows as those characters, never as an element.
"""

from __future__ import annotations

import html
import re
import unicodedata

DEFAULT_MAX_CAPTION_CHARS = 2000
MAX_NAME_CHARS = 100

# ASCII punctuation that Markdown (with Gradio's extensions) gives a meaning; ``<``, ``>``, ``&``
# and quotes are left to html.escape, whose entities must not be backslash-escaped after it.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:$])")


class CaptionRejected(ValueError):
    """A caption that cannot be used; ``str(exc)`` is the reason."""


def _plain(raw: object, what: str) -> str:
    """``raw`` as NFC text with whitespace collapsed and control characters dropped."""
    if raw is None:
        raise CaptionRejected(f"missing {what}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CaptionRejected(f"{what} is not valid UTF-8 text") from exc
    if not isinstance(raw, str):
        if isinstance(raw, float) and raw != raw:  # NaN from pandas
            raise CaptionRejected(f"missing {what}")
        raw = str(raw)
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in raw):
        raise CaptionRejected(f"{what} is not valid UTF-8 text (undecodable bytes)")
    text = " ".join(unicodedata.normalize("NFC", raw).split())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc")


def clean_caption(raw: object, max_chars: int = DEFAULT_MAX_CAPTION_CHARS) -> str:
    """Normalise a caption (NFC, collapsed whitespace) or raise :class:`CaptionRejected`."""
    text = _plain(raw, "caption")
    if not text:
        raise CaptionRejected("blank caption")
    if len(text) > max_chars:
        raise CaptionRejected(f"caption too long ({len(text):,} characters, limit {max_chars:,})")
    return text


def clean_name(raw: object, what: str = "collection") -> str:
    """Normalise the name of a collection (or run) the way captions are, at most 100 characters."""
    text = _plain(raw, f"{what} name")
    if not text:
        raise CaptionRejected(f"a {what} needs a name")
    if len(text) > MAX_NAME_CHARS:
        raise CaptionRejected(
            f"{what} names are at most {MAX_NAME_CHARS} characters (this one has {len(text):,})"
        )
    return text


def shorten(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis (``None``: uncut)."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(1, limit - 1)].rstrip() + "…"


def md(text: object, limit: int | None = None) -> str:
    """User text made safe for Markdown (Gradio's ``gr.Markdown``, which also renders HTML).

    HTML is escaped and Markdown punctuation backslash-escaped, so what a person typed shows as
    typed. ``limit`` shortens long text for display first.
    """
    plain = shorten(str(text), limit)
    return html.escape(_MARKDOWN_SPECIAL.sub(r"\\\1", plain), quote=True)


def html_text(text: object, limit: int | None = None) -> str:
    """User text made safe for an HTML context (``gr.HTML``, attributes included)."""
    return html.escape(shorten(str(text), limit), quote=True)
