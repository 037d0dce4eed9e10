"""Every condition/result reason, in one place (as CloudNativePG does).

A reason is a CamelCase word that a user can look up in the README's troubleshooting table; the
runner puts it in its result, the operator copies it into conditions and events.
"""

from __future__ import annotations

# Success and progress
SUCCEEDED = "Succeeded"
PLANNED = "Planned"
DRY_RUN = "DryRunCompleted"
UP_TO_DATE = "AlreadyAtTarget"
BACKUP_VERIFIED = "BackupVerified"
ROLLED_BACK_DOWNGRADE = "RolledBackByDowngrade"
ROLLED_BACK_RESTORE = "RolledBackByRestore"
# The failed stage's own transaction undid it; no earlier stage had been committed.
ROLLED_BACK_TRANSACTION = "RolledBackByTransaction"

# Refused before anything changed
INVALID_INPUT = "InvalidInput"
MULTIPLE_HEADS = "MultipleHeads"
UNKNOWN_REVISION = "UnknownRevision"
LINT_BLOCKED = "LintBlocked"
INTEGRITY_CHECK_FAILED = "IntegrityCheckFailed"
BACKUP_REQUIRED = "BackupRequired"
PG_DUMP_TOO_OLD = "PgDumpTooOld"
LOCKED_BY_ANOTHER_MIGRATION = "LockedByAnotherMigration"
# The migration lock's session ended mid-run (terminated, connection lost): stopped, no rollback.
LOCK_LOST = "MigrationLockLost"
# The database is past (or beside) the requested target: `apply` never downgrades on request.
TARGET_BEHIND_DATABASE = "TargetBehindDatabase"
# create-model-migration / sync-models-to-db refusals (nothing written, nothing changed)
NOT_AT_HEAD = "DatabaseNotAtHead"
NEVER_STAMPED = "DatabaseNeverStamped"
NO_SCHEMA_CHANGES = "NoSchemaChanges"
# a generated revision holds an op PostgreSQL (or Alembic) would reject when it runs
REVISION_WOULD_FAIL = "RevisionWouldFail"
DEVELOPMENT_ONLY = "DevelopmentOnly"
# Expand/contract (issue 13): refused before anything changed (an expand whose catalog check
# fails after it is rolled back with IncompatibleExpand as its reason).
INCOMPATIBLE_EXPAND = "IncompatibleExpand"  # the expand would break the running release
EXPAND_SKIPS_CONTRACT = "ExpandSkipsContract"  # an expand revision after a pending contract one
CONTRACT_BEFORE_EXPAND = "ContractBeforeExpand"  # contract asked while its expand is pending
NOT_NULL_WITHOUT_DEFAULT = "NotNullWithoutDefault"
# Backups (issue 14): a restore point needs working WAL archiving and the right to create it;
# it cannot be restored in place; a pg_dump must fit in the Job's deadline.
WAL_ARCHIVING_UNAVAILABLE = "WalArchivingUnavailable"
RESTORE_POINT_NOT_PERMITTED = "RestorePointNotPermitted"
RESTORE_POINT_NOT_RESTORABLE = "RestorePointNotRestorable"
BACKUP_WOULD_OVERRUN_DEADLINE = "BackupWouldOverrunDeadline"

# Infrastructure
DATABASE_UNREACHABLE = "DatabaseUnreachable"
STORAGE_UNREACHABLE = "StorageUnreachable"
STORAGE_ACCESS_DENIED = "StorageAccessDenied"
# Object storage moved no data for the stall limit (SCHEMASHIFT_S3_STALL_TIMEOUT): abandoned.
STORAGE_STALLED = "StorageStalled"
BUCKET_NOT_FOUND = "BucketNotFound"
BACKUP_FAILED = "BackupFailed"
BACKUP_VERIFY_FAILED = "BackupVerificationFailed"
BACKUP_NOT_FOUND = "BackupNotFound"
BACKUP_NOT_VERIFIED = "BackupNotVerified"
RESTORE_FAILED = "RestoreFailed"
# Issue 14: the targeted copy of what the plan drops could not be taken; nothing was migrated.
TARGETED_COPY_FAILED = "TargetedCopyFailed"
# Issue 14: a downgrade found a targeted copy it could not put back (missing, damaged, no store).
TARGETED_COPY_NOT_RESTORED = "TargetedCopyNotRestored"

# Failures while migrating
MIGRATION_FAILED = "MigrationFailed"
LOCK_RETRIES_EXHAUSTED = "LockRetriesExhausted"
ROLLBACK_FAILED = "RollbackFailed"
# Back at the from-revision, but an autocommit block of the failed stage left objects behind.
PARTIALLY_ROLLED_BACK = "PartiallyRolledBack"
NOT_ROLLED_BACK = "FailedWithoutRollback"
VERIFY_FAILED = "VerificationFailed"
# SIGTERM (pod deadline, deletion) or Ctrl-C: the runner stopped and rolled back what it could.
INTERRUPTED = "Interrupted"

# Operator (SchemaMigration conditions and events)
JOB_CREATED = "JobCreated"
WAITING_FOR_DATABASE = "WaitingForDatabase"
AWAITING_APPROVAL = "AwaitingApproval"
APPROVED = "ApprovedByAnnotation"
APPROVAL_NOT_REQUIRED = "ApprovalNotRequired"
APPROVAL_HASH_MISMATCH = "ApprovalHashMismatch"
PLAN_STALE = "PlanStale"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_NOT_FOUND = "SecretKeyNotFound"
SERVICE_ACCOUNT_NOT_FOUND = "ServiceAccountNotFound"
IMAGE_NOT_SET = "ImageNotSet"
# The admin's policy (chart values `policy.*`) refuses the image, ServiceAccount, tolerations,
# nodeSelector or priorityClassName: no Job is created.
POLICY_DENIED = "PolicyDenied"
DEADLINE_EXCEEDED = "DeadlineExceeded"
POD_EVICTED = "PodEvicted"
IMAGE_PULL_FAILED = "ImagePullFailed"
CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
JOB_FAILED_WITHOUT_RESULT = "JobFailedWithoutResult"
JOB_NOT_FOUND = "JobNotFound"
JOB_REJECTED = "JobRejected"  # the API server refused the Job or its pods (4xx, FailedCreate)
SPEC_CHANGED_DURING_RUN = "SpecChangedDuringRun"
ALREADY_SUCCEEDED = "AlreadySucceeded"
DELETED_WHILE_RUNNING = "DeletedWhileRunning"
IN_PROGRESS = "InProgress"

# Expand/contract (issue 13): condition ContractPending, from the run's pendingContract.
CONTRACT_PENDING = "ContractPending"  # contract revisions remain after a successful expand
NO_CONTRACT_PENDING = "NoContractPending"
