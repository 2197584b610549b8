"""Foundations every layer uses: settings, schemas, errors, request context, ids, token counts.

May import nothing else from ``aichat``: every other layer imports these.
"""
