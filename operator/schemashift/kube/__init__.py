"""Kubernetes pieces with no kopf in them (the operator package wires them to kopf).

- `resource`: the SchemaMigration's names and its spec read with the contract's defaults
  (the CRD itself is `manifests/crd/schemamigrations.yaml`, the one source; its run option
  fields are generated from runner/options_table.py by tools/gen_crd.py);
- `jobspec`: the migration Job as a dict (pure functions);
- `conditions`, `status`: kstatus conditions, a Job's outcome, a run's result as status;
- `reporter`: inside the Job, live progress to the resource's status (`job_reporter`);
- `client`: the few API calls the operator makes;
- `wait`: `schemashift wait` for Helm hooks.
"""
