"""Tools built on the public API, apart from the core: ``hyrax-tbhub demo`` and ``inspect``."""
