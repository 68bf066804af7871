from tests.admin.conftest import spool_message  # noqa: F401 - a fixture shared with the admin tests
