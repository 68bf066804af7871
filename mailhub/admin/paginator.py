"""A paginator for the queue lists that never counts the whole spool on a page load.

Django's paginator runs ``COUNT(*)`` over the listed rows, and with a million queued
recipients that count is a full scan on every page of the list. This one counts at most
EXACT_COUNT_LIMIT + 1 rows. A longer list gets PostgreSQL's estimate of its row count
(from the table statistics when the list is unfiltered, from the planner otherwise), or on
other databases the bound itself, shown as "more than 10,000".
"""
import json
import logging

from django.core.paginator import Paginator
from django.db import DatabaseError, connections
from django.utils.functional import cached_property

logger = logging.getLogger(__name__)

# A bounded count costs as much as reading this many index entries, whatever the spool holds.
EXACT_COUNT_LIMIT = 10_000


class QueuePaginator(Paginator):
    """A paginator whose count is exact up to EXACT_COUNT_LIMIT and estimated above it.

    ``count_qualifier`` is the word that the list prints before an inexact count:
    "about" before an estimate, "more than" before the bound.
    """

    count_qualifier = ""

    @cached_property
    def count(self):
        limit = EXACT_COUNT_LIMIT
        counted = self.object_list.order_by()[: limit + 1].count()
        if counted <= limit:
            return counted

        estimate = estimate_row_count(self.object_list)
        if estimate is None or estimate <= limit:
            self.count_qualifier = "more than"
            return limit
        self.count_qualifier = "about"
        return estimate


def estimate_row_count(queryset):
    """Return the database's estimate of the queryset's row count, or None where it has none."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    try:
        if not queryset.query.where:
            return table_row_estimate(connection, queryset.model._meta.db_table)
        return planner_row_estimate(queryset)
    except DatabaseError as error:
        # An estimate only labels the list, so the page still works with the bound.
        logger.warning("row estimate of %s failed: %s", queryset.model._meta.db_table, error)
        return None


def table_row_estimate(connection, table):
    """Return the row count that autovacuum last recorded for the table, or None before its first ANALYZE."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [table])
        row = cursor.fetchone()
    if row is None or row[0] < 0:
        return None
    return int(row[0])


def planner_row_estimate(queryset):
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])
