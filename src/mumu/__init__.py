"""mumu: a voice-question pipeline on NATS JetStream."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mumu")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["__version__"]
