"""Benchmarks of mailhub beside Postfix and a bare aiosmtpd sink.

Run each script from the repository root as a module, for example
``.venvs/django5/bin/python -m bench.inbound``; docs/benchmarks.md lists them all. They print
tables and write the same figures as JSON to bench/results/. They are not tests.
"""
