"""Broker specifics: Redis (rescue transport, results), SQS."""
