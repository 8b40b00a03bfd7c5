"""How a process finds a hub: a hub file named by an environment variable or found in the
per-user runtime folder, the generation word every hub start bumps (hubfile), or a served hub's
entry in the torch.distributed store (store)."""
