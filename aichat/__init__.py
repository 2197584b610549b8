"""aichat: an OpenAI-compatible gateway for chat services that do not speak the OpenAI API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("aichat")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
