"""End-to-end fixtures: the real Kubernetes test bed (tests/e2e/testbed/).

Fixtures for the operator tests can be added below the imports.
"""

# Operator fixtures (smig_crd, operator_process, migrations): tests/e2e/operator_fixtures.py
from tests.e2e.operator_fixtures import (  # noqa: F401 - fixtures are found by name
    migrations,
    operator_log_is_clean,
    operator_process,
    smig_crd,
)
from tests.e2e.testbed.fixtures import (  # noqa: F401 - fixtures and hook are found by name
    admin_api,
    control_plane,
    kubelet,
    namespace,
    pytest_runtest_makereport,
)
