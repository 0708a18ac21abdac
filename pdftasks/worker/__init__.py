"""The worker side: the generate_pdf task (tasks), its request (request), its signal receivers
(signals), the message guard (guard) and its checks (checks)."""
