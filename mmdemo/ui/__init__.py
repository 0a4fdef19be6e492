"""The Gradio web UI: :func:`mmdemo.ui.app.build_app` and one module per tab.

Only this package imports gradio. Handlers stay thin: convert values, call one domain function,
format the result.
"""
