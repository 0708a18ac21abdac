"""The worker side: the generate_pdf task (tasks), its request (request), its signal receivers
(signals), the message guard (guard) and its checks (checks), split jobs (split) and the
sweep that sends again jobs whose message the Redis broker lost (lost)."""
