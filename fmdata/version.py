"""The toolkit's version: recorded in what it writes (store metadata, provenance of derived data,
reports); the faces ``fmdata.__version__`` and ``fmmodel.__version__`` give it to users."""
__version__ = "0.1.0"
