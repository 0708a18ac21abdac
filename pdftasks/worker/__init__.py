"""The worker side: the generate_pdf task, its request, the message guard."""
