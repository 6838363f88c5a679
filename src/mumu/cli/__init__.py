"""The ``mumu`` command line."""
