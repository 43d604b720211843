"""Command-line interface (``maskformer ...``)."""
