"""Inbound SMTP: the MX and submission listeners on aiosmtpd."""
