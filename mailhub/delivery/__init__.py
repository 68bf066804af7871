"""Outbound delivery: routing, MX resolution, the SMTP client, retries, bounces and local delivery."""
