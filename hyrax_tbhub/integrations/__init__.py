"""Loggers for training frameworks, built on :class:`hyrax_tbhub.SummaryWriter`.

Each lives in its own module and imports its framework only when that module is imported:
``hyrax_tbhub.integrations.lightning`` needs ``pytorch-lightning`` (``pip install
"hyrax_tbhub[lightning]"``).
"""
