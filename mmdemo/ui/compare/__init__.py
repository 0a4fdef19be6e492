"""The Compare tab: ``layout.py`` builds it, ``handlers.py`` holds its thin handlers."""
