"""Plugins on an app: webhooks, monitoring, the beat schedule and reports."""
