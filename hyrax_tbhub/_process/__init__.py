"""This process's side: where its logging calls go (state), how it finds and joins a hub
(connect), how its events survive fork, exit and SIGTERM (hooks), a rank's own hub (rank_hub),
and the hubs and producers of SummaryWriter objects (writers)."""
