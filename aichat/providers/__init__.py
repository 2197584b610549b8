"""Upstream providers behind one interface (``base.Provider``); ``registry`` builds them.

Kept empty on purpose: importing ``aichat.providers.base`` must not import every provider.
"""
