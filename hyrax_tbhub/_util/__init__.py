"""Process plumbing that knows nothing of hubs: stderr, our threads, fork-safe imports, TCP options."""
