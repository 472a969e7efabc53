"""Sphinx extension: drop duplicate ``<script>`` tags from every page.

With Sphinx 7.4, sphinx-thebe 0.3.1 and sphinx-togglebutton add their inline configuration scripts
twice to each page (once with ``filename=None`` and once with ``filename=''``, which Sphinx does not
see as equal). The second copy of sphinx-thebe's ``const THEBE_JS_URL = ...`` is an uncaught
``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` in every reader's console.
This extension keeps the first of equal scripts (same file, priority and attributes).
Enabled in ``_config.yml`` (``sphinx: local_extensions``); ``tests/test_browser.py`` checks that no
page logs an error in Chromium.
"""

from __future__ import annotations


def _key(js) -> tuple:
    attributes = getattr(js, "attributes", {}) or {}
    return (
        str(getattr(js, "filename", js) or ""),
        getattr(js, "priority", None),
        tuple(sorted((str(k), str(v)) for k, v in attributes.items())),
    )


def dedupe(scripts) -> list:
    seen, out = set(), []
    for js in scripts:
        key = _key(js)
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def _on_page(app, pagename, templatename, context, doctree):
    if "script_files" in context:
        # A new list: context["script_files"] is the builder's own list, restored after each page.
        context["script_files"] = dedupe(context["script_files"])


def setup(app):
    # After the other html-page-context handlers (MathJax adds its script in one).
    app.connect("html-page-context", _on_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
