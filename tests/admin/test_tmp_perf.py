import time
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from tests.admin.test_message_list import create_messages

@pytest.mark.django_db
def test_perf(operator_client):
    for _ in range(10):
        create_messages(10000)
    for name, params in [("admin:mailhub_message_changelist", {}), ("admin:mailhub_message_changelist", {"status": "deferred", "domain": "a.load.test"}),
                         ("admin:mailhub_message_changelist", {"status": "held"}), ("admin:mailhub_message_changelist", {"q": "user1@a.load.test"}),
                         ("admin:mailhub_recipient_changelist", {}), ("admin:mailhub_message_summary", {}), ("admin:mailhub_message_changelist", {"age": "10-20"})]:
        operator_client.get(reverse(name), params)
        start = time.perf_counter()
        with CaptureQueriesContext(connection) as c:
            operator_client.get(reverse(name), params)
        total = time.perf_counter() - start
        slow = sorted(c.captured_queries, key=lambda q: -float(q["time"]))[:2]
        print(f"\n{name} {params} {total:.3f}s queries={len(c.captured_queries)}")
        for q in slow: print("   ", q["time"], q["sql"][:200])
