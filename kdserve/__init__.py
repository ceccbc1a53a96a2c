"""kdserve: distil BERT teachers into tiny students and serve them behind a stable /classify API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kdserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
