{{/*
One phase of the release's migration: the SchemaMigration with spec.phase set, and (outside Argo
CD mode) the waiter that blocks Helm until it ends, with the waiter's own read-only RBAC.
include with (dict "root" $ "phase" "expand"|"contract").
*/}}
{{- define "schemashift-hook.phase" -}}
{{- $root := .root }}
{{- $events := include "schemashift-hook.events" .phase }}
{{- $name := include "schemashift-hook.migrationName" . }}
{{- $waiter := include "schemashift-hook.waiterName" . }}
{{- $spec := include "schemashift-hook.spec" $root | fromYaml }}
{{- if not (dig "migrations" "image" "" $spec) }}
{{- fail "migration.spec.migrations.image is required: the image holding your Alembic scripts and schemashift" }}
{{- end }}
{{- if and (dig "backup" "enabled" false $spec) (not (dig "backup" "url" "" $spec)) }}
{{- fail "migration.spec.backup.url is required when migration.spec.backup.enabled is true (s3://bucket/prefix/); production migrations need a backup" }}
{{- end }}
{{- $_ := set $spec "phase" .phase }}
{{- if not $root.Values.argocd.enabled }}
# The waiter reads this phase's SchemaMigration, and nothing else. Hooks of a lower weight than
# the SchemaMigration and the waiter: they exist before either runs.
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $waiter }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "schemashift-hook.labels" $root | nindent 4 }}
  annotations:
    {{- include "schemashift-hook.hook" (list $events "-20" "before-hook-creation,hook-succeeded") | nindent 4 }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $waiter }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "schemashift-hook.labels" $root | nindent 4 }}
  annotations:
    {{- include "schemashift-hook.hook" (list $events "-20" "before-hook-creation,hook-succeeded") | nindent 4 }}
rules:
  # list/watch by name: the waiter's watch carries fieldSelector metadata.name=<name>.
  - apiGroups: [schemashift.io]
    resources: [schemamigrations]
    resourceNames: [{{ $name | quote }}]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $waiter }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "schemashift-hook.labels" $root | nindent 4 }}
  annotations:
    {{- include "schemashift-hook.hook" (list $events "-20" "before-hook-creation,hook-succeeded") | nindent 4 }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $waiter }}
subjects:
  - kind: ServiceAccount
    name: {{ $waiter }}
    namespace: {{ $root.Release.Namespace }}
---
{{- end }}
{{- if not (include "schemashift-hook.stillRunning" .) }}
apiVersion: schemashift.io/v1alpha1
kind: SchemaMigration
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "schemashift-hook.labels" $root | nindent 4 }}
    schemashift.io/phase: {{ .phase }}
    schemashift.io/content: {{ include "schemashift-hook.contentHash" $root | quote }}
    {{- with $root.Values.migration.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    # Kept after success: the record of what ran (status, backup, plan). The same release
    # content (same name) replaces it; a new content gets a new name, so earlier records stay.
    {{- include "schemashift-hook.hook" (list $events "-10" "before-hook-creation") | nindent 4 }}
    {{- with $root.Values.migration.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- toYaml $spec | nindent 2 }}
{{- end }}
{{- if not $root.Values.argocd.enabled }}
{{- $seconds := include "schemashift-hook.waitSeconds" $root | int }}
---
# Helm waits for this Job (and only for Jobs and Pods among hooks): it completes when the
# SchemaMigration Succeeded and fails when it Failed or RolledBack, failing the release; Helm then
# prints its log, whose last line says where the database is.
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $waiter }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "schemashift-hook.labels" $root | nindent 4 }}
    schemashift.io/phase: {{ .phase }}
  annotations:
    # A failed waiter is kept for `kubectl logs`; the next release replaces it.
    {{- include "schemashift-hook.hook" (list $events "0" "before-hook-creation,hook-succeeded") | nindent 4 }}
    helm.sh/hook-output-log-policy: hook-failed
spec:
  backoffLimit: 0
  activeDeadlineSeconds: {{ add $seconds $root.Values.waiter.startupSeconds }}
  template:
    metadata:
      labels:
        {{- include "schemashift-hook.labels" $root | nindent 8 }}
        app.kubernetes.io/component: wait
        schemashift.io/phase: {{ .phase }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ $waiter }}
      automountServiceAccountToken: true
      {{- with $root.Values.waiter.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: wait
          image: {{ include "schemashift-hook.waiterImage" $root | quote }}
          imagePullPolicy: {{ $root.Values.waiter.image.pullPolicy }}
          command: ["schemashift"]
          args:
            - wait
            - {{ $name | quote }}
            - --namespace
            - {{ $root.Release.Namespace | quote }}
            - --timeout
            - {{ printf "%ds" $seconds | quote }}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          resources:
            {{- toYaml $root.Values.waiter.resources | nindent 12 }}
      {{- with $root.Values.waiter.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.waiter.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
{{- end }}
