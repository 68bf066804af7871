"""Bulk INSERTs of prepared messages and their recipients, without model instances.

``insert_group()`` writes a group of messages and their recipients. On PostgreSQL with
psycopg 3 that is one statement, whatever the group's size: the rows go as one array per
column and a data-modifying CTE inserts both tables. Elsewhere ``insert_rows()`` sends
multi-row INSERTs.
"""
import functools
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connection, connections, models
from django.utils import timezone

from .addresses import domain_of
from .models import Message, Recipient

# From this many rows on, insert_rows() sends them with psycopg 3's pipelined
# executemany(). For fewer rows the pipeline's own round trips cost more CPU than Django's
# client-side binding of one multi-row INSERT (measured with psycopg 3.3 and 4 KB messages).
PIPELINE_MIN_ROWS = 4
# Keeps one INSERT under PostgreSQL's 65,535 bind parameters with server-side binding
# (about 20 columns per row).
MAX_ROWS_PER_INSERT = 1000


def insert_group(prepared):
    """Insert prepared messages and their recipients; return the message ids in order."""
    if inserts_group_in_one_statement():
        return insert_group_with_arrays(prepared)
    message_ids = insert_rows(Message, [item.fields for item in prepared], returning=True)
    now = timezone.now()
    recipient_rows = [
        {"message_id": message_id, "next_attempt_at": now, **recipient_values(recipient)}
        for message_id, item in zip(message_ids, prepared)
        for recipient in item.recipients
    ]
    insert_rows(Recipient, recipient_rows)
    return message_ids


def inserts_group_in_one_statement():
    return uses_psycopg3()


# The recipient columns that differ per recipient; the others are the same for a group.
RECIPIENT_ROW_FIELDS = ("address", "domain", "notify", "original_recipient")


def recipient_values(recipient):
    return {
        "address": recipient.address,
        "domain": domain_of(recipient.address),
        "notify": recipient.notify,
        "original_recipient": recipient.original_recipient,
    }


def insert_group_with_arrays(prepared):
    """Insert the group with one statement of column arrays (PostgreSQL, psycopg 3).

    The statement's text is the same for every group size, so PostgreSQL can keep it
    prepared (with the connection's prepare_threshold), and psycopg sends one statement
    per group instead of one per row.
    """
    import psycopg

    sql, params = group_statement_and_params(prepared)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        ids_by_queue_id = dict(cursor.fetchall())
    return [ids_by_queue_id[item.queue_id] for item in prepared]


def group_statement_and_params(prepared):
    """Return the SQL of insert_group_with_arrays() and its parameters for ``prepared``."""
    statement = group_statement()
    database = connections[DEFAULT_DB_ALIAS]
    message_rows = [item.fields for item in prepared]
    message_columns = database_columns(statement.message_fields, message_rows, database, cast_in_statement)
    shared_values = group_shared_values(statement, database)
    recipient_rows = [
        {"queue_id": item.queue_id, **recipient_values(recipient)}
        for item in prepared
        for recipient in item.recipients
    ]
    row_columns = database_columns(statement.row_fields, recipient_rows, database, cast_in_statement)
    queue_ids = [row["queue_id"] for row in recipient_rows]
    return statement.sql, [*message_columns, *shared_values, queue_ids, *row_columns]


def group_shared_values(statement, database):
    """Return the values that every recipient of a group shares, in shared_fields order.

    Timestamps are the time of the insert, and constant defaults come from a cache.
    """
    now = timezone.now()
    values = []
    for field, constant in zip(statement.shared_fields, constant_defaults(statement.shared_fields, database)):
        if is_timestamp(field):
            values.append(field.get_db_prep_save(now, database))
        elif callable(field.default):
            values.append(field.get_db_prep_save(field.get_default(), database))
        else:
            values.append(constant)
    return values


@functools.cache
def constant_defaults(fields, database):
    """Return the converted defaults of ``fields`` (a tuple); None where the default is not constant."""
    return [
        None if is_timestamp(field) or callable(field.default) else field.get_db_prep_save(field.get_default(), database)
        for field in fields
    ]


def is_timestamp(field):
    """Return whether a recipient field that insert_group() leaves out gets the time of the insert."""
    return field.attname == "next_attempt_at" or getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)


def cast_in_statement(field):
    """Return whether a str value can go to group_statement() unchanged.

    The statement casts every parameter to its column's type, so PostgreSQL also turns a
    str into an inet, and the IP address needs no parsing here.
    """
    return text_field(field) or isinstance(field, models.GenericIPAddressField)


@dataclass(frozen=True)
class GroupStatement:
    """The SQL of insert_group_with_arrays() and the fields of its parameters, in order."""

    message_fields: list
    shared_fields: tuple
    row_fields: list
    sql: str


@functools.cache
def group_statement():
    """Build the GroupStatement once per process: Django's db_type() calls cost more than running it.

    Each message column is an array. Of the recipient columns, those that differ per
    recipient are arrays and the rest are one value for the whole group, because psycopg
    spends more CPU on an array parameter than PostgreSQL spends on the insert.
    """
    message_fields = [field for field in Message._meta.concrete_fields if not field.primary_key]
    recipient_fields = [
        field
        for field in Recipient._meta.concrete_fields
        if not field.primary_key and field.attname != "message_id"
    ]
    row_fields = [field for field in recipient_fields if field.attname in RECIPIENT_ROW_FIELDS]
    shared_fields = tuple(field for field in recipient_fields if field.attname not in RECIPIENT_ROW_FIELDS)

    quote = connection.ops.quote_name
    message_names = ", ".join(quote(field.column) for field in message_fields)
    message_arrays = ", ".join(f"%b::{field.db_type(connection)}[]" for field in message_fields)
    recipient_names = ", ".join(quote(field.column) for field in [*shared_fields, *row_fields])
    shared_values = ", ".join(f"%b::{field.db_type(connection)}" for field in shared_fields)
    row_arrays = ", ".join(f"%b::{field.db_type(connection)}[]" for field in row_fields)
    row_aliases = ", ".join(f"c{index}" for index in range(len(row_fields)))
    sql = (
        f"WITH new_messages AS ("
        f"INSERT INTO {quote(Message._meta.db_table)} ({message_names}) SELECT * FROM unnest({message_arrays}) "
        f"RETURNING {quote('queue_id')}, {quote('id')}"
        f"), new_recipients AS ("
        f"INSERT INTO {quote(Recipient._meta.db_table)} ({quote('message_id')}, {recipient_names}) "
        f"SELECT new_messages.{quote('id')}, {shared_values}, {row_aliases} "
        f"FROM unnest(%b::varchar[], {row_arrays}) AS rows(queue_id, {row_aliases}) "
        f"JOIN new_messages ON new_messages.{quote('queue_id')} = rows.queue_id"
        f") SELECT {quote('queue_id')}, {quote('id')} FROM new_messages"
    )
    return GroupStatement(message_fields, shared_fields, row_fields, sql)


def database_columns(fields, rows, database, keeps_str):
    """Return one list per field with the rows' values as the database adapter takes them."""
    values = database_values(fields, rows, database, keeps_str)
    return [list(column) for column in zip(*values)]


def insert_rows(model, rows, returning=False):
    """INSERT ``rows`` (dicts by field attname, the same keys in each) with multi-row statements.

    Fields a row leaves out get their default, computed once for all rows. With
    ``returning``, returns the new primary keys in row order, as bulk_create() relies on.
    """
    if not rows:
        return []
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    values = database_values(fields, rows, connections[DEFAULT_DB_ALIAS], text_field)

    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    statement = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES "
    if len(rows) >= PIPELINE_MIN_ROWS and uses_psycopg3():
        returning_clause = f" RETURNING {quote(model._meta.pk.column)}" if returning else ""
        return insert_rows_pipelined(statement + placeholders + returning_clause, values, returning)
    batch_size = max(1, min(MAX_ROWS_PER_INSERT, connection.ops.bulk_batch_size(fields, rows)))
    with_returning = returning and connection.features.can_return_rows_from_bulk_insert
    if returning and not with_returning:
        batch_size = 1

    keys = []
    with connection.cursor() as cursor:
        for start in range(0, len(values), batch_size):
            batch = values[start : start + batch_size]
            sql = statement + ", ".join([placeholders] * len(batch))
            if with_returning:
                sql += f" RETURNING {quote(model._meta.pk.column)}"
            cursor.execute(sql, [value for row in batch for value in row])
            if with_returning:
                keys.extend(row[0] for row in cursor.fetchall())
            elif returning:
                keys.append(connection.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column))
    return keys


@functools.cache
def uses_psycopg3():
    # Cached: the default database's backend does not change while the process runs.
    if connection.vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def insert_rows_pipelined(sql, values, returning):
    """Run a one-row INSERT for every row with psycopg 3's executemany(); return the RETURNING values.

    executemany() sends all rows in one pipeline with server-side binding, so PostgreSQL
    parses the statement once and the message bytes go over unquoted. Django's cursor
    binds on the client instead, which for groups of four 4 KB messages took about 1.3
    times the CPU (measured with psycopg 3.3 on a 2-core machine), more for larger groups.
    """
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.executemany(sql, values, returning=returning)
        if not returning:
            return []
        keys = [cursor.fetchone()[0]]
        while cursor.nextset():
            keys.append(cursor.fetchone()[0])
        return keys


def database_values(fields, rows, database, keeps_str):
    """Return each row's values for ``fields`` as the database adapter takes them.

    ``database`` is a connection of connections[], not the ``connection`` proxy: every
    field conversion reads it several times, and each read through the proxy is a
    thread-local lookup. A str value goes unchanged to a field for which ``keeps_str``
    returns True. The defaults of the fields that the rows leave out are converted once
    for all rows.
    """
    defaults = {
        field.attname: field.get_db_prep_save(default_value(field), database)
        for field in fields
        if field.attname not in rows[0]
    }
    converters = [(field.attname, keeps_str(field), field.get_db_prep_save) for field in fields]
    values = []
    for row in rows:
        row_values = []
        for attname, is_text, convert in converters:
            if attname in defaults:
                row_values.append(defaults[attname])
                continue
            value = row[attname]
            row_values.append(value if is_text and type(value) is str else convert(value, database))
        values.append(row_values)
    return values


@functools.cache
def text_field(field):
    """Return whether Django passes a str to the database unchanged for ``field``.

    True for CharField and TextField with Django's own conversion methods: their
    get_db_prep_save() returns a str as it is, through four calls per value.
    """
    cls = type(field)
    stock_methods = (
        cls.get_db_prep_save is models.Field.get_db_prep_save
        and cls.get_db_prep_value is models.Field.get_db_prep_value
        and cls.get_prep_value in (models.CharField.get_prep_value, models.TextField.get_prep_value)
        and cls.to_python in (models.CharField.to_python, models.TextField.to_python)
    )
    return isinstance(field, (models.CharField, models.TextField)) and stock_methods


def default_value(field):
    """Return what save() would store in a field left unset: now for auto_now(_add), else the default."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return timezone.now()
    return field.get_default()

